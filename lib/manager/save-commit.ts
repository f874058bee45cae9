/**
 * One CheckpointManager save as one commit plan (backend.ts, "commit plans"), built synchronously at step() time
 * from what the manager decided: keep the version a fixed name replaces (`previous`: a hard link, a copy where links
 * are unsupported), write the checkpoint from the snapshot, link `last` to it (written again from the snapshot where
 * links are unsupported), re-check the directory lock, write the index (already serialized, listing the retention
 * deletions), re-check the lock, delete what retention dropped. Nothing here touches the disk except to list a
 * deleted checkpoint's shards (checkpointPathsSync); the backend executes the plan off the JS thread.
 *
 * `interpretFailure` says what a failed plan left in place, so the store records exactly that.
 */
import * as path from 'node:path';
import type { CommitFailure, CommitPlan, CommitResult, CommitStep, LinkStep } from '../backend/backend';
import { DTYPES } from '../format/header';
import { acquireTempPath } from '../fs/tempfiles';
import { checkpointPathsSync } from '../io/shards';
import type { NamedTensors } from '../io/tensors';
import { checkpointWritePlan } from '../io/tensors';
import type { CheckpointEntry } from './checkpoint-index';
import { INDEX_FILENAME } from './checkpoint-index';

export interface SavePlanArgs {
  /** Absolute checkpoint directory. */
  directory: string;
  durable: boolean;
  /** The snapshot's tensors (host arrays, held by the plan until it settles). */
  tensors: NamedTensors;
  /** A file's metadata: the snapshot's, plus the entry's own record. */
  metadataOf: (entry: CheckpointEntry) => Record<string, string>;
  /** The lock to re-check before publishing; none when the directory is not locked (never in the manager). */
  lock?: { path: string; content: Uint8Array };
  /** Keep the current `from` under `entry.file` before `main` replaces it. */
  previous?: { from: string; entry: CheckpointEntry };
  main?: CheckpointEntry;
  last?: CheckpointEntry;
  /** The index to publish once the files are in place, serialized. */
  index: string;
  /** Checkpoint names (files or shard sets) the index lists as deleted: removed after it, best-effort. */
  deletes: readonly string[];
}

export interface BuiltSave {
  plan: CommitPlan;
  /** The entry each file step (checkpoint or link) puts in place, by step index. */
  publishes: Map<number, CheckpointEntry>;
  /** Index of the index-writing step. */
  indexStep: number;
  /** Temp paths of the plan's steps: release them (releaseTempPath) once it settles. */
  temps: string[];
  /** Each deleted path's checkpoint name, to map unlink warnings back to the names still to delete. */
  deleteOwners: Map<string, string>;
  /** The file-order tensor names of the checkpoint (to name a checksum failure). */
  tensorNames: string[];
}

/** Builds the plan (see the module comment). Throws INVALID_ARGUMENT for a header no reader could load. */
export function buildSavePlan(a: SavePlanArgs): BuiltSave {
  const dir = a.directory;
  const temps: string[] = [];
  const temp = (): string => {
    const t = acquireTempPath(dir);
    temps.push(t);
    return t;
  };
  const inputs = Object.keys(a.tensors).map((name) => {
    const t = a.tensors[name];
    return { name, dtype: DTYPES[t.dtype].st, shape: [...t.shape], byteLength: t.data.byteLength };
  });
  let tensorNames: string[] = [];
  const writeOf = (entry: CheckpointEntry) => {
    const built = checkpointWritePlan(
      path.join(dir, entry.file),
      temp(),
      a.tensors,
      inputs,
      a.metadataOf(entry),
      a.durable,
    );
    tensorNames = built.tensorNames;
    return built.plan;
  };
  const steps: CommitStep[] = [];
  const publishes = new Map<number, CheckpointEntry>();
  const deleteOwners = new Map<string, string>();
  const unlinkPaths: string[] = [];
  if (a.previous) {
    publishes.set(steps.length, a.previous.entry);
    steps.push(link(dir, a.previous.from, a.previous.entry.file, temp(), a.durable, 'copy'));
  }
  if (a.main) {
    publishes.set(steps.length, a.main);
    steps.push({ kind: 'checkpoint', write: writeOf(a.main) });
    // A shard set saved earlier under this name would shadow the new file for readers: removed after the index.
    for (const p of checkpointPathsSync(path.join(dir, a.main.file)).slice(1)) {
      unlinkPaths.push(p);
      deleteOwners.set(p, a.main.file);
    }
  }
  if (a.last) {
    publishes.set(steps.length, a.last);
    steps.push(
      a.main
        ? link(dir, a.main.file, a.last.file, temp(), a.durable, writeOf(a.last))
        : { kind: 'checkpoint', write: writeOf(a.last) },
    );
  }
  const lockStep: CommitStep[] = a.lock ? [{ kind: 'checkLock', path: a.lock.path, content: a.lock.content }] : [];
  steps.push(...lockStep);
  const indexStep = steps.length;
  steps.push({
    kind: 'text',
    path: path.join(dir, INDEX_FILENAME),
    tmpPath: temp(),
    bytes: Buffer.from(a.index, 'utf8'),
    durable: a.durable,
  });
  for (const f of a.deletes) {
    for (const p of checkpointPathsSync(path.join(dir, f))) {
      unlinkPaths.push(p);
      deleteOwners.set(p, f);
    }
  }
  if (unlinkPaths.length > 0) steps.push(...lockStep, { kind: 'unlink', paths: unlinkPaths });
  const label = a.main?.file ?? a.last?.file ?? INDEX_FILENAME;
  return { plan: { label: `the save of ${label}`, steps }, publishes, indexStep, temps, deleteOwners, tensorNames };
}

function link(
  dir: string,
  from: string,
  to: string,
  tmpPath: string,
  durable: boolean,
  fallback: LinkStep['fallback'],
): LinkStep {
  return { kind: 'link', from: path.join(dir, from), to: path.join(dir, to), tmpPath, durable, fallback };
}

/** What a failed plan left in place. */
export interface FailureOutcome {
  /** Entries whose files are in place (renamed), in step order: the store records these. */
  placed: CheckpointEntry[];
  /** The failing step put its own file in place (it failed at the directory fsync after its rename). */
  stepCommitted: boolean;
  /** The new index is in place: a later step failed (the lock re-check before the deletions), or the index's own
   * directory fsync did. */
  indexWritten: boolean;
}

export function interpretFailure(built: BuiltSave, f: Partial<CommitFailure>): FailureOutcome {
  const step = typeof f.step === 'number' ? f.step : -1;
  const stepCommitted = f.stepCommitted === true;
  const placed: CheckpointEntry[] = [];
  for (const [i, entry] of built.publishes) {
    if (i < step || (i === step && stepCommitted)) placed.push(entry);
  }
  return { placed, stepCommitted, indexWritten: step > built.indexStep || (step === built.indexStep && stepCommitted) };
}

/** The checkpoint names whose deletion failed (a plan's unlink warnings), each logged once through `logger`. */
export function undeletedNames(
  built: BuiltSave,
  result: CommitResult,
  logger: { warn(message: string): void },
): Set<string> {
  const warned = new Set<string>();
  for (const w of result.warnings) {
    const owner = built.deleteOwners.get(w.path);
    if (owner === undefined || warned.has(owner)) continue;
    logger.warn(`tfjs-checkpoint: could not delete ${owner}: ${w.message}`);
    warned.add(owner);
  }
  return warned;
}
