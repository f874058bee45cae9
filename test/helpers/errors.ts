/**
 * The CheckpointError a call throws or a promise rejects with, failing the test when there is none or it is not a
 * CheckpointError. (Older suites have local copies; new ones use these.)
 */
import { CheckpointError } from '../../lib/errors';

function checked(e: unknown): CheckpointError {
  expect(e).toBeInstanceOf(CheckpointError);
  return e as CheckpointError;
}

export function thrownBy(fn: () => unknown): CheckpointError {
  try {
    fn();
  } catch (e) {
    return checked(e);
  }
  throw new Error('expected a throw');
}

export async function rejectionOf(p: Promise<unknown>): Promise<CheckpointError> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => checked(e),
  );
}
