// The Node-API boundary, and nothing else: exports, argument unpacking into plain C++ structs, async workers,
// and conversion of results and failures into JS values.
//
// Exports: write(plan): Promise<void>, read(plan): Promise<(ArrayBuffer|null)[]> (null: read into plan.into[i]),
// crc32c(view, crc?): number, crc32cPortable(view, crc?): number, crc32cCombine(crcA, crcB, lengthB): number,
// crc32cHardware: boolean, crc32cViews(views): Promise<number[]> (each view's CRC32C, on a pool thread: crc_views.h),
// and the CommitQueue class (commit_binding.cc). See lib/backend/backend.ts for the plans;
// value conversion lives in js_convert.cc.
//
// Threading rules:
// - Argument unpacking, OnOK and OnError run on the JS thread of the environment that called (main thread or a
//   worker_threads worker: the addon keeps no per-process JS state, so it is context-aware).
// - Execute runs on a libuv pool thread and touches only the plain C++ job: no Napi::Env, no JS values.
// - The TypedArrays being written (and crc32cViews' views) are kept alive by an ObjectReference held
//   by the worker until it is destroyed (on the JS thread, after the promise settles). The header is copied on the JS
//   thread.
// - Plans are validated in TypeScript; here a wrong type or a broken invariant throws a TypeError/RangeError
//   synchronously (never an abort).
#include <napi.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "commit_binding.h"
#include "crc32c.h"
#include "crc_views.h"
#include "failure.h"
#include "js_convert.h"
#include "mapped_reader.h"
#include "tensor_reader.h"
#include "tensor_writer.h"

namespace tfjs_checkpoint {
namespace {

// ---- write ----------------------------------------------------------------------------------------------------

class WriteWorker : public Napi::AsyncWorker {
 public:
  // `keep` holds every view of the job; it is released when the worker is destroyed (after the promise settles).
  WriteWorker(Napi::Env env, WriteJob job, Napi::Object keep)
      : Napi::AsyncWorker(env, "tfjs_checkpoint.write"),
        deferred_(Napi::Promise::Deferred::New(env)),
        job_(std::move(job)),
        keep_(Napi::Persistent(keep)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (!WriteCheckpoint(job_, &failure_)) SetError("write failed");  // details in failure_
  }
  void OnOK() override {
    SettleSafely(deferred_, [&] { deferred_.Resolve(Env().Undefined()); });
  }
  void OnError(const Napi::Error&) override {
    SettleSafely(deferred_, [&] {
      Napi::HandleScope scope(Env());
      deferred_.Reject(FailureToError(Env(), failure_).Value());
    });
  }

 private:
  Napi::Promise::Deferred deferred_;
  WriteJob job_;
  Failure failure_;
  Napi::ObjectReference keep_;
};

Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object plan = PlanArgument(info);
  WriteJob job;
  Napi::Array keep = Napi::Array::New(env);
  UnpackWriteJob(env, plan, "plan", &job, keep);

  const std::string invalid = ValidateWriteJob(job);
  if (!invalid.empty()) throw Napi::RangeError::New(env, "invalid write plan: " + invalid);

  auto* worker = new WriteWorker(env, std::move(job), keep);
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // the worker deletes itself after OnOK/OnError
  return promise;
}

// ---- read -----------------------------------------------------------------------------------------------------

class ReadWorker : public Napi::AsyncWorker {
 public:
  // `views`: the JS views of job.into's given destinations, held until the worker is deleted (on the JS thread).
  ReadWorker(Napi::Env env, ReadJob job, std::vector<Napi::Reference<Napi::Value>> views)
      : Napi::AsyncWorker(env, "tfjs_checkpoint.read"),
        deferred_(Napi::Promise::Deferred::New(env)),
        job_(std::move(job)),
        views_(std::move(views)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    const bool ok = job_.map ? MapCheckpoint(job_, &mapped_, &failure_) : ReadCheckpoint(job_, &buffers_, &failure_);
    if (!ok) SetError("read failed");  // details in failure_
  }

  void OnOK() override {
    SettleSafely(deferred_, [&] {
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      const size_t n = job_.map ? mapped_.views.size() : buffers_.size();
      Napi::Array result = Napi::Array::New(env, n);
      for (size_t i = 0; i < n; i++) {
        // null for a range read into the caller's destination (ReadPlan.into)
        const bool given = !job_.into.empty() && job_.into[i].given;
        result.Set(static_cast<uint32_t>(i), job_.map ? ViewBuffer(env, mapped_.mapping, mapped_.views[i])
                                             : given  ? env.Null()
                                                      : TakeBuffer(env, buffers_[i]));
      }
      deferred_.Resolve(result);
    });
    buffers_.clear();  // frees whatever was not handed to JS (all of it if building the result failed)
    mapped_.Reset();   // drops the job's own reference: the views' finalizers hold the mapping from here
  }

  void OnError(const Napi::Error&) override {
    buffers_.clear();
    mapped_.Reset();
    SettleSafely(deferred_, [&] {
      Napi::HandleScope scope(Env());
      deferred_.Reject(FailureToError(Env(), failure_).Value());
    });
  }

 private:
  // Hands the malloc'd bytes to JS as an external ArrayBuffer freed by its finalizer: no copy, and the memory was
  // allocated off the JS thread. Where external buffers are not allowed (a V8 sandbox, e.g. Electron), copies into
  // a V8-allocated ArrayBuffer instead.
  static Napi::ArrayBuffer TakeBuffer(Napi::Env env, OwnedBuffer& buffer) {
    if (buffer.length == 0) return Napi::ArrayBuffer::New(env, 0);
    napi_value value = nullptr;
    const napi_status status = napi_create_external_arraybuffer(
        env, buffer.data.get(), buffer.length, [](napi_env, void* data, void*) { std::free(data); }, nullptr, &value);
    if (status == napi_ok) {
      buffer.data.release();  // now owned by the ArrayBuffer's finalizer
      return Napi::ArrayBuffer(env, value);
    }
    Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, buffer.length);
    std::memcpy(copy.Data(), buffer.data.get(), buffer.length);
    buffer.data.reset();
    return copy;
  }

  // A view of a mapping as an external ArrayBuffer holding one reference to it (released by its finalizer, on the JS
  // thread). Where external buffers are not allowed, a copy.
  static Napi::ArrayBuffer ViewBuffer(Napi::Env env, Mapping* mapping, const MappedView& view) {
    if (view.length == 0) return Napi::ArrayBuffer::New(env, 0);
    napi_value value = nullptr;
    mapping->Retain();
    const napi_status status = napi_create_external_arraybuffer(
        env, view.data, view.length, [](napi_env, void*, void* hint) { Mapping::Release(static_cast<Mapping*>(hint)); },
        mapping, &value);
    if (status == napi_ok) return Napi::ArrayBuffer(env, value);
    Mapping::Release(mapping);
    Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, view.length);
    std::memcpy(copy.Data(), view.data, view.length);
    return copy;
  }

  Napi::Promise::Deferred deferred_;
  ReadJob job_;
  std::vector<Napi::Reference<Napi::Value>> views_;
  MappedResult mapped_;
  std::vector<OwnedBuffer> buffers_;
  Failure failure_;
};

Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object plan = PlanArgument(info);
  ReadJob job;
  job.path = GetString(env, plan, "path");
  // plan.fd: the caller's open descriptor of path (kept open by the caller until the promise settles), or absent.
  const Napi::Value fd = Field(plan, "fd");
  if (!fd.IsUndefined()) {
    const uint64_t n = ToIndex(env, fd, "plan.fd");
    if (n > 0x7fffffff) ThrowType(env, "plan.fd must be a file descriptor");
    job.fd = static_cast<int>(n);
  }
  job.file_size = GetIndex(env, plan, "fileSize");
  job.data_start = GetIndex(env, plan, "dataStart");
  job.verify = GetBool(env, plan, "verify");
  const Napi::Value map = Field(plan, "map");
  if (!map.IsUndefined()) job.map = GetBool(env, plan, "map");

  Napi::Value ranges_value = Field(plan, "ranges");
  if (!ranges_value.IsArray()) ThrowType(env, "plan.ranges must be an array");
  Napi::Array ranges = ranges_value.As<Napi::Array>();
  job.ranges.reserve(ranges.Length());
  for (uint32_t i = 0; i < ranges.Length(); i++) {
    job.ranges.push_back(ToIndex(env, ranges.Get(i), "plan.ranges[" + std::to_string(i) + "]"));
  }
  Napi::Value crcs_value = Field(plan, "crcs");
  if (!crcs_value.IsArray()) ThrowType(env, "plan.crcs must be an array");
  Napi::Array crcs = crcs_value.As<Napi::Array>();
  if (job.verify) {
    job.crcs.reserve(crcs.Length());
    for (uint32_t i = 0; i < crcs.Length(); i++) {
      const uint64_t crc = ToIndex(env, crcs.Get(i), "plan.crcs[" + std::to_string(i) + "]");
      if (crc > 0xffffffffu) ThrowType(env, "plan.crcs[" + std::to_string(i) + "] must be a 32-bit unsigned integer");
      job.crcs.push_back(static_cast<uint32_t>(crc));
    }
  }

  // plan.into: absent, or one entry per range, null/undefined (a fresh buffer) or the view to read into.
  std::vector<Napi::Reference<Napi::Value>> views;
  const Napi::Value into_value = Field(plan, "into");
  if (!into_value.IsUndefined()) {
    if (!into_value.IsArray()) ThrowType(env, "plan.into must be an array");
    Napi::Array into = into_value.As<Napi::Array>();
    job.into.resize(into.Length());
    for (uint32_t i = 0; i < into.Length(); i++) {
      const Napi::Value v = into.Get(i);
      if (v.IsNull() || v.IsUndefined()) continue;
      const ByteSpan span = ViewBytes(env, v, "plan.into[" + std::to_string(i) + "]");
      // Writable: a view's memory is the JS heap's own ArrayBuffer (or SharedArrayBuffer) store.
      job.into[i] = Destination{true, const_cast<uint8_t*>(span.data), span.length};
      views.push_back(Napi::Persistent(v));
    }
  }

  const std::string invalid = ValidateReadJob(job);
  if (!invalid.empty()) throw Napi::RangeError::New(env, "invalid read plan: " + invalid);

  auto* worker = new ReadWorker(env, std::move(job), std::move(views));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- crc32c ---------------------------------------------------------------------------------------------------

template <uint32_t (*Fn)(const void*, size_t, uint32_t)>
Napi::Value CrcFunction(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1) ThrowType(env, "data must be an ArrayBufferView");
  const ByteSpan bytes = ViewBytes(env, info[0], "data");
  const uint32_t crc = OptionalCrc(env, info.Length() > 1 ? info[1] : env.Undefined());
  return Napi::Number::New(env, Fn(bytes.data, bytes.length, crc));
}

// crc32cCombine(crcA, crcB, lengthB): the CRC32C of A followed by B (lengthB: a safe integer byte count).
Napi::Value CrcCombineFunction(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || info[0].IsUndefined() || info[1].IsUndefined()) {
    ThrowType(env, "crc32cCombine needs crcA, crcB and lengthB");
  }
  const uint32_t a = OptionalCrc(env, info[0]);
  const uint32_t b = OptionalCrc(env, info[1]);
  const uint64_t length = ToIndex(env, info[2], "lengthB");
  return Napi::Number::New(env, Crc32cCombine(a, b, length));
}

// ---- crc32cViews ----------------------------------------------------------------------------------------------

class CrcViewsWorker : public Napi::AsyncWorker {
 public:
  // `keep` holds the views; released when the worker is destroyed (after the promise settles).
  CrcViewsWorker(Napi::Env env, std::vector<ByteSpan> views, Napi::Object keep)
      : Napi::AsyncWorker(env, "tfjs_checkpoint.crc32cViews"),
        deferred_(Napi::Promise::Deferred::New(env)),
        views_(std::move(views)),
        keep_(Napi::Persistent(keep)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override { crcs_ = CrcOfViews(views_); }  // cannot fail
  void OnOK() override {
    SettleSafely(deferred_, [&] {
      Napi::Env env = Env();
      Napi::HandleScope scope(env);
      Napi::Array result = Napi::Array::New(env, crcs_.size());
      for (size_t i = 0; i < crcs_.size(); i++) result.Set(static_cast<uint32_t>(i), Napi::Number::New(env, crcs_[i]));
      deferred_.Resolve(result);
    });
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<ByteSpan> views_;
  std::vector<uint32_t> crcs_;
  Napi::ObjectReference keep_;
};

// crc32cViews(views): views an array of ArrayBufferViews. A broken contract throws synchronously (TypeError).
Napi::Value CrcViews(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) ThrowType(env, "views must be an array of ArrayBufferViews");
  Napi::Array views = info[0].As<Napi::Array>();
  std::vector<ByteSpan> spans;
  Napi::Array keep = Napi::Array::New(env);
  spans.reserve(views.Length());
  for (uint32_t i = 0; i < views.Length(); i++) {
    const Napi::Value v = views.Get(i);
    spans.push_back(ViewBytes(env, v, "views[" + std::to_string(i) + "]"));
    keep.Set(i, v);
  }
  auto* worker = new CrcViewsWorker(env, std::move(spans), keep);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("crc32c", Napi::Function::New(env, CrcFunction<Crc32c>, "crc32c"));
  exports.Set("crc32cPortable", Napi::Function::New(env, CrcFunction<Crc32cPortable>, "crc32cPortable"));
  exports.Set("crc32cCombine", Napi::Function::New(env, CrcCombineFunction, "crc32cCombine"));
  exports.Set("crc32cViews", Napi::Function::New(env, CrcViews, "crc32cViews"));
  exports.Set("crc32cHardware", Napi::Boolean::New(env, Crc32cHardwareAvailable()));
  exports.Set("CommitQueue", DefineCommitQueueClass(env));
  return exports;
}

}  // namespace
}  // namespace tfjs_checkpoint

// NODE_API_MODULE pastes its second argument into an identifier: it needs an unqualified name.
static Napi::Object InitTfjsCheckpoint(Napi::Env env, Napi::Object exports) {
  return tfjs_checkpoint::Init(env, exports);
}

NODE_API_MODULE(tfjs_checkpoint, InitTfjsCheckpoint)
