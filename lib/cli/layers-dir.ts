/**
 * tfjs layers-model directories (the format of `model.save('file://dir')` and of tensorflowjs_converter): a
 * `model.json` (topology, training config, weights manifest) beside binary weight shards. Two IOHandlers:
 * `layersDirWriter` for `model.save` and `layersDirReader` for `tf.loadLayersModel`. Both work with any tfjs
 * platform, including the pure-JS one, and produce/accept exactly what tfjs-node's `file://` handler does. The
 * directory may be an `s3://bucket/prefix` (the files are objects under it, each written with one PUT). Local files
 * are written like every other file of the library: atomically and durably (lib/fs/atomic-file.ts writeFileAtomic:
 * temp file, fsync, rename, directory fsync), in a directory whose new levels are fsynced into their parents.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type * as tfTypes from '@tensorflow/tfjs';
import { fromNodeError } from '../errors';
import { isDirectory } from '../fs/entry-kind';
import { placeOf } from '../io/shard-place';
import { writeFileAtomic } from '../fs/atomic-file';
import { fsyncCreatedDirectories } from '../fs/fsync-dir';
import { deleteObject, putObject, readObject } from '../s3/text-objects';
import { locationScheme, objectIn, parseS3Prefix, parseS3Url } from '../s3/location';
import { listPrefix } from '../s3/prefix';
import { CliError, ExitCode } from './exit-codes';

type ModelArtifacts = tfTypes.io.ModelArtifacts;
type WeightsManifestEntry = tfTypes.io.WeightsManifestEntry;
type ModelJSON = tfTypes.io.ModelJSON;

export const MODEL_JSON = 'model.json';
/** Our shard names follow tensorflowjs_converter: group1-shard1of3.bin, ... */
const SHARD_PATTERN = /^group1-shard\d+of\d+\.bin$/;

export interface LayersDirWriterArgs {
  /** Maximum bytes per weight shard. Default: 4 MiB (tensorflowjs_converter's default). */
  shardBytes?: number;
  /** Recorded as model.json's `convertedBy`. Default: 'tfjs-checkpoint'. */
  convertedBy?: string;
}

/** The byte chunks of weightData in order, as Uint8Array views (no copy). */
function chunks(weightData: ArrayBuffer | ArrayBuffer[] | undefined): Uint8Array[] {
  if (weightData === undefined) return [];
  return (Array.isArray(weightData) ? weightData : [weightData]).map((b) => new Uint8Array(b));
}

/** A layers-model directory's files, whole: a local directory or an s3:// prefix. */
interface LayersPlace {
  /** The directory as messages name it (absolute, or the s3:// URL). */
  readonly where: string;
  /** Where the file `name` is (a relative name, `/`-separated). */
  locate(name: string): string;
  /** Creates the directory if needed, durably (nothing to do on S3). */
  create(): Promise<void>;
  /** Writes `name` whole or not at all, durably (temp file, fsync, rename, directory fsync; one PUT). */
  write(name: string, data: string | Uint8Array): Promise<void>;
  read(name: string, what: string): Promise<Buffer>;
  /** The names directly in the directory. */
  names(): Promise<string[]>;
  /** Removes `name`, best effort. */
  remove(name: string): Promise<void>;
}

function localPlace(dir: string): LayersPlace {
  return {
    where: dir,
    locate: (name) => path.join(dir, name),
    async create() {
      let created: string | undefined;
      try {
        created = await fsp.mkdir(dir, { recursive: true });
      } catch (e) {
        throw fromNodeError(e, dir, 'create the directory');
      }
      if (created === undefined) return;
      // As a durable save does (io/save.ts): the new directories' entries survive power loss with the files in them.
      try {
        await fsyncCreatedDirectories(dir, created);
      } catch (e) {
        throw fromNodeError(e, dir, 'fsync the directory');
      }
    },
    write: (name, data) => writeFileAtomic(path.join(dir, name), data, true, 'write'),
    async read(name, what) {
      const file = path.join(dir, name);
      try {
        return await fsp.readFile(file);
      } catch (e) {
        throw fromNodeError(e, file, what);
      }
    },
    names: () => fsp.readdir(dir),
    remove: (name) => fsp.unlink(path.join(dir, name)).catch(() => undefined),
  };
}

function s3Place(url: string): LayersPlace {
  const prefix = parseS3Prefix(url, 'the model directory');
  // A manifest's relative path may have directories of its own: its objects are then under deeper prefixes.
  const at = (name: string) => parseS3Url(`${prefix.url}/${name}`, 'a model file');
  return {
    where: prefix.url,
    locate: (name) => at(name).url,
    create: async () => undefined,
    write: async (name, data) => {
      await putObject(
        at(name),
        data,
        name.endsWith('.json') ? 'application/json' : 'application/octet-stream',
        'write',
      );
    },
    read: (name, what) => readObject(at(name), what),
    names: async () => (await listPrefix(prefix)).map((e) => e.name),
    remove: (name) => deleteObject(objectIn(prefix, name)).catch(() => undefined),
  };
}

/** The files of the layers-model directory `dir`, local or s3://. */
function layersPlace(dir: string): LayersPlace {
  return locationScheme(dir, 'the model directory') === 's3' ? s3Place(dir) : localPlace(path.resolve(dir));
}

/** Where model.json of the layers-model directory `dir` (local or s3://) is. */
export function modelJsonIn(dir: string): string {
  return layersPlace(dir).locate(MODEL_JSON);
}

/**
 * Writes the shards of `parts` (`total` bytes) and then model.json listing them, each whole and durable; `names`
 * (empty) receives each shard's name once it is written: what to remove if a later write fails.
 */
async function writeFiles(
  place: LayersPlace,
  artifacts: ModelArtifacts,
  parts: Uint8Array[],
  total: number,
  shardBytes: number,
  convertedBy: string | undefined,
  names: string[],
): Promise<void> {
  const count = Math.max(1, Math.ceil(total / shardBytes));
  let part = 0;
  let offsetInPart = 0;
  for (let s = 0; s < count; s++) {
    const size = Math.min(shardBytes, total - s * shardBytes);
    const shard = new Uint8Array(Math.max(0, size));
    let filled = 0;
    while (filled < shard.length) {
      const p = parts[part];
      const n = Math.min(p.byteLength - offsetInPart, shard.length - filled);
      shard.set(p.subarray(offsetInPart, offsetInPart + n), filled);
      filled += n;
      offsetInPart += n;
      if (offsetInPart === p.byteLength) {
        part++;
        offsetInPart = 0;
      }
    }
    const name = `group1-shard${s + 1}of${count}.bin`;
    await place.write(name, shard);
    names.push(name);
  }
  const modelJson: ModelJSON = {
    modelTopology: artifacts.modelTopology as object,
    format: artifacts.format ?? 'layers-model',
    generatedBy: artifacts.generatedBy,
    convertedBy: convertedBy ?? 'tfjs-checkpoint',
    weightsManifest: [{ paths: names, weights: artifacts.weightSpecs ?? [] }],
    ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
    ...(artifacts.userDefinedMetadata ? { userDefinedMetadata: artifacts.userDefinedMetadata } : {}),
  };
  const jsonText = JSON.stringify(modelJson);
  await place.write(MODEL_JSON, jsonText);
}

/**
 * An IOHandler that writes `dir/model.json` and `dir/group1-shardKofN.bin` (`dir` local or an s3:// prefix). Shards
 * are written first and model.json last, each whole or not at all and durably (temp file, fsync, rename, directory
 * fsync; one PUT), so a model.json always describes complete shards. A failed export removes the shards it wrote and
 * leaves no temp file; stale shards of an earlier export into the same directory are removed after a successful one.
 * (An export into a directory holding an earlier one replaces its files one by one: if it fails midway, that earlier
 * export has lost the shards of the same names.)
 */
export function layersDirWriter(dir: string, args: LayersDirWriterArgs = {}): tfTypes.io.IOHandler {
  const shardBytes = args.shardBytes ?? 4 * 1024 * 1024;
  const place = layersPlace(dir);
  return {
    async save(artifacts: ModelArtifacts): Promise<tfTypes.io.SaveResult> {
      if (artifacts.modelTopology instanceof ArrayBuffer) {
        throw new CliError(ExitCode.INVALID, 'Cannot export a graph model (binary topology): only layers models');
      }
      await place.create();
      const parts = chunks(artifacts.weightData);
      const total = parts.reduce((a, p) => a + p.byteLength, 0);
      const names: string[] = [];
      try {
        await writeFiles(place, artifacts, parts, total, shardBytes, args.convertedBy, names);
      } catch (e) {
        // No partial export: the shards this save wrote go again (model.json is written last, so it was not).
        for (const name of names) await place.remove(name);
        throw e;
      }
      const keep = new Set(names);
      for (const entry of await place.names()) {
        if (SHARD_PATTERN.test(entry) && !keep.has(entry)) await place.remove(entry);
      }
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          modelTopologyBytes: Buffer.byteLength(JSON.stringify(artifacts.modelTopology)),
          weightSpecsBytes: Buffer.byteLength(JSON.stringify(artifacts.weightSpecs ?? [])),
          weightDataBytes: total,
        },
      };
    },
  };
}

/** `dir` or `dir/model.json` -> the model.json path (an s3:// URL names model.json when it ends with .json). */
export async function resolveModelJson(target: string): Promise<string> {
  if (locationScheme(target, 'the model directory') === 's3') {
    if (/\.json$/i.test(target)) return parseS3Url(target, 'the model.json').url;
    return `${parseS3Prefix(target, 'the model directory').url}/${MODEL_JSON}`;
  }
  const abs = path.resolve(target);
  return (await isDirectory(abs, 'open')) ? path.join(abs, MODEL_JSON) : abs;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * An IOHandler that loads a layers model from `modelJsonPath` and the shards its manifest names (relative to its
 * directory). Each shard must have been fully written: the total size must match what the weight specs need.
 */
export function layersDirReader(modelJsonPath: string): tfTypes.io.IOHandler {
  const s3 = locationScheme(modelJsonPath, 'the model.json') === 's3';
  // The directory (prefix) holding model.json, as the shard modules find a file's (io/shard-place.ts).
  const dir = placeOf(modelJsonPath);
  const place = layersPlace(dir);
  const name = s3 ? modelJsonPath.slice(dir.length + 1) : path.basename(modelJsonPath);
  return {
    async load(): Promise<ModelArtifacts> {
      const text = (await place.read(name, 'read')).toString('utf8');
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (e) {
        throw new CliError(ExitCode.INVALID, `${modelJsonPath} is not valid JSON: ${(e as Error).message}`);
      }
      if (!isObject(json) || !isObject(json.modelTopology) || !Array.isArray(json.weightsManifest)) {
        throw new CliError(
          ExitCode.INVALID,
          `${modelJsonPath} is not a tfjs layers model (expected modelTopology and weightsManifest)`,
        );
      }
      const specs: WeightsManifestEntry[] = [];
      const buffers: ArrayBuffer[] = [];
      for (const group of json.weightsManifest as unknown[]) {
        if (!isObject(group) || !Array.isArray(group.paths) || !Array.isArray(group.weights)) {
          throw new CliError(ExitCode.INVALID, `${modelJsonPath} has a malformed weightsManifest`);
        }
        specs.push(...(group.weights as WeightsManifestEntry[]));
        for (const p of group.paths) {
          if (typeof p !== 'string' || p.length === 0 || path.isAbsolute(p) || (s3 && /(^|\/)\.\.?(\/|$)/.test(p))) {
            throw new CliError(ExitCode.INVALID, `${modelJsonPath} names an invalid weight file ${JSON.stringify(p)}`);
          }
          const data = await place.read(p, 'read the weight shard');
          // An exact ArrayBuffer, never a pooled Buffer's backing store (tfjs ignores byteOffset).
          buffers.push(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer);
        }
      }
      checkWeightBytes(modelJsonPath, specs, buffers);
      const model = json as unknown as ModelJSON;
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        weightSpecs: specs,
        weightData: buffers,
        ...(model.trainingConfig ? { trainingConfig: model.trainingConfig } : {}),
        ...(model.userDefinedMetadata ? { userDefinedMetadata: model.userDefinedMetadata } : {}),
      };
    },
  };
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1 };

/** Refuses shards whose total size differs from what the (unquantized) weight specs need: a torn or stale export. */
function checkWeightBytes(file: string, specs: WeightsManifestEntry[], buffers: ArrayBuffer[]): void {
  let expected = 0;
  for (const s of specs) {
    const size = DTYPE_BYTES[s.dtype];
    if (size === undefined || s.quantization) return; // sizes we do not model: tfjs checks these itself
    expected += s.shape.reduce((a, b) => a * b, 1) * size;
  }
  const actual = buffers.reduce((a, b) => a + b.byteLength, 0);
  if (actual !== expected) {
    throw new CliError(
      ExitCode.INVALID,
      `${file}: the weight shards hold ${actual} bytes but the weights need ${expected} (a torn or mismatched export)`,
    );
  }
}
