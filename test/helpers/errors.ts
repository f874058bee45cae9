/**
 * The CheckpointError a call throws or a promise rejects with, failing the test when there is none, it is not a
 * CheckpointError, or (when `code` is given) its code is another. (Older suites have local copies; new ones use these.)
 */
import { CheckpointError } from '../../lib/errors';

function checked(e: unknown, code: string | undefined): CheckpointError {
  expect(e).toBeInstanceOf(CheckpointError);
  if (code !== undefined) expect((e as CheckpointError).code).toBe(code);
  return e as CheckpointError;
}

export function thrownBy(fn: () => unknown, code?: string): CheckpointError {
  try {
    fn();
  } catch (e) {
    return checked(e, code);
  }
  throw new Error('expected a throw');
}

export async function rejectionOf(p: Promise<unknown>, code?: string): Promise<CheckpointError> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => checked(e, code),
  );
}
