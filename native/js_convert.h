// Node-API value conversion shared by the bindings (addon.cc: write/read/crc32c; commit_binding.cc: commit queues).
//
// Threading: JS thread only (the one whose env is passed). Every function throws a Napi::TypeError for a value that
// breaks the contract of lib/backend/backend.ts (the TypeScript layer validated it: this is a bug, never an abort).
#ifndef TFJS_CHECKPOINT_JS_CONVERT_H_
#define TFJS_CHECKPOINT_JS_CONVERT_H_

#include <napi.h>

#include <cstdint>
#include <string>

#include "failure.h"
#include "tensor_writer.h"

namespace tfjs_checkpoint {

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message);
Napi::Value Field(const Napi::Object& plan, const char* name);
// A non-empty string without NUL bytes (a path); `what` names the object in messages ("plan.steps[2]").
std::string GetString(Napi::Env env, const Napi::Object& plan, const char* name, const std::string& what = "plan");
bool GetBool(Napi::Env env, const Napi::Object& plan, const char* name, const std::string& what = "plan");
// A non-negative integer up to 2^53 - 1 (the exact range of a JS number).
uint64_t ToIndex(Napi::Env env, const Napi::Value& v, const std::string& what);
uint64_t GetIndex(Napi::Env env, const Napi::Object& plan, const char* name, const std::string& what = "plan");
// The bytes of any ArrayBufferView (TypedArray, Buffer or DataView), respecting byteOffset and byteLength. Uses the
// data pointer Node-API reports for the view itself, so views over a SharedArrayBuffer work too. The pointer stays
// valid while the view is referenced and its buffer not detached.
ByteSpan ViewBytes(Napi::Env env, const Napi::Value& v, const std::string& what);
// An optional CRC argument (undefined: 0).
uint32_t OptionalCrc(Napi::Env env, const Napi::Value& v);
// info[0] as the plan object.
Napi::Object PlanArgument(const Napi::CallbackInfo& info);
// A WritePlan into `job` (header copied, array pointers captured); each array view is appended to `keep`, which the
// caller references until the job is done.
void UnpackWriteJob(Napi::Env env, const Napi::Object& plan, const std::string& what, WriteJob* job, Napi::Array keep);
// The Error object of BackendFailure: message, kind, errno, syscall, path, tensorIndex, expectedCrc, actualCrc,
// committed.
Napi::Error FailureToError(Napi::Env env, const Failure& f);

// Settles `deferred` by running `settle`; if that fails (e.g. out of memory building the result), rejects with the
// failure instead, so the promise never stays pending. When the environment is shutting down (a worker_threads
// worker terminated while the job ran) no JS can run and every Node-API call fails: nobody is left to tell, so the
// failure is dropped (NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS keeps node-addon-api from aborting on it too).
template <typename Settle>
void SettleSafely(Napi::Promise::Deferred& deferred, Settle&& settle) {
  try {
    settle();
  } catch (const Napi::Error& e) {
    try {
      deferred.Reject(e.Value());
    } catch (const Napi::Error&) {
      // environment shutting down
    }
  }
}

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_JS_CONVERT_H_
