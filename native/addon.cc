// The Node-API boundary, and nothing else: exports, argument unpacking into plain C++ structs, async workers,
// and conversion of results and failures into JS values.
//
// Exports: write(plan): Promise<void>, read(plan): Promise<ArrayBuffer[]>, crc32c(view, crc?): number,
// crc32cPortable(view, crc?): number, crc32cCombine(crcA, crcB, lengthB): number, crc32cHardware: boolean. See
// lib/backend/backend.ts for the plans.
//
// Threading rules:
// - Argument unpacking, OnOK and OnError run on the JS thread of the environment that called (main thread or a
//   worker_threads worker: the addon keeps no per-process JS state, so it is context-aware).
// - Execute runs on a libuv pool thread and touches only the plain C++ job: no Napi::Env, no JS values.
// - The TypedArrays being written are kept alive by an ObjectReference held by the worker until it is destroyed
//   (on the JS thread, after the promise settles). The header is copied on the JS thread.
// - Plans are validated in TypeScript; here a wrong type or a broken invariant throws a TypeError/RangeError
//   synchronously (never an abort).
#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "atomic_file.h"
#include "crc32c.h"
#include "failure.h"
#include "mapped_reader.h"
#include "tensor_reader.h"
#include "tensor_writer.h"

namespace tfjs_checkpoint {
namespace {

// ---- argument unpacking -------------------------------------------------------------------------------------

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }

Napi::Value Field(const Napi::Object& plan, const char* name) { return plan.Get(name); }

std::string GetString(Napi::Env env, const Napi::Object& plan, const char* name) {
  Napi::Value v = Field(plan, name);
  if (!v.IsString()) ThrowType(env, std::string("plan.") + name + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() || s.find('\0') != std::string::npos) {
    ThrowType(env, std::string("plan.") + name + " must be a non-empty path without NUL bytes");
  }
  return s;
}

bool GetBool(Napi::Env env, const Napi::Object& plan, const char* name) {
  Napi::Value v = Field(plan, name);
  if (!v.IsBoolean()) ThrowType(env, std::string("plan.") + name + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// A non-negative integer up to 2^53 - 1 (the exact range of a JS number).
uint64_t ToIndex(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) ThrowType(env, what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) {
    ThrowType(env, what + " must be a non-negative safe integer");
  }
  return static_cast<uint64_t>(d);
}

uint64_t GetIndex(Napi::Env env, const Napi::Object& plan, const char* name) {
  return ToIndex(env, Field(plan, name), std::string("plan.") + name);
}

// The bytes of any ArrayBufferView (TypedArray, Buffer or DataView), respecting byteOffset and byteLength. Uses the
// data pointer Node-API reports for the view itself, so views over a SharedArrayBuffer work too.
ByteSpan ViewBytes(Napi::Env env, const Napi::Value& v, const std::string& what) {
  ByteSpan span;
  void* data = nullptr;
  napi_status status = napi_invalid_arg;
  if (v.IsTypedArray()) {
    napi_typedarray_type type;
    size_t length = 0;
    status = napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr);
    span.length = v.As<Napi::TypedArray>().ByteLength();
  } else if (v.IsDataView()) {
    status = napi_get_dataview_info(env, v, &span.length, &data, nullptr, nullptr);
  } else {
    ThrowType(env, what + " must be an ArrayBufferView");
  }
  if (status != napi_ok) ThrowType(env, what + " is not a readable ArrayBufferView");
  if (span.length > 0 && data == nullptr) ThrowType(env, what + " has a detached buffer");
  span.data = static_cast<const uint8_t*>(data);
  return span;
}

uint32_t OptionalCrc(Napi::Env env, const Napi::Value& v) {
  if (v.IsUndefined()) return 0;
  const uint64_t crc = ToIndex(env, v, "crc");
  if (crc > 0xffffffffu) ThrowType(env, "crc must be a 32-bit unsigned integer");
  return static_cast<uint32_t>(crc);
}

Napi::Object PlanArgument(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) ThrowType(info.Env(), "plan must be an object");
  return info[0].As<Napi::Object>();
}

// ---- failures -----------------------------------------------------------------------------------------------

const char* ErrnoName(int e) {
  switch (e) {
#define TFJS_CKPT_ERRNO(name) \
  case name:                  \
    return #name;
    TFJS_CKPT_ERRNO(EACCES)
    TFJS_CKPT_ERRNO(EPERM)
    TFJS_CKPT_ERRNO(ENOENT)
    TFJS_CKPT_ERRNO(EEXIST)
    TFJS_CKPT_ERRNO(ENOTDIR)
    TFJS_CKPT_ERRNO(EISDIR)
    TFJS_CKPT_ERRNO(ENOSPC)
    TFJS_CKPT_ERRNO(EDQUOT)
    TFJS_CKPT_ERRNO(EFBIG)
    TFJS_CKPT_ERRNO(EROFS)
    TFJS_CKPT_ERRNO(EIO)
    TFJS_CKPT_ERRNO(EMFILE)
    TFJS_CKPT_ERRNO(ENFILE)
    TFJS_CKPT_ERRNO(ENAMETOOLONG)
    TFJS_CKPT_ERRNO(ELOOP)
    TFJS_CKPT_ERRNO(ENOMEM)
    TFJS_CKPT_ERRNO(EINVAL)
    TFJS_CKPT_ERRNO(EBADF)
    TFJS_CKPT_ERRNO(EBUSY)
    TFJS_CKPT_ERRNO(EXDEV)
    TFJS_CKPT_ERRNO(ENOTEMPTY)
    TFJS_CKPT_ERRNO(ETXTBSY)
    TFJS_CKPT_ERRNO(EAGAIN)
#undef TFJS_CKPT_ERRNO
    default:
      return "EIO";
  }
}

std::string Hex(uint32_t crc) {
  uint8_t digits[8];
  FormatCrcHex(crc, digits);
  return std::string(reinterpret_cast<const char*>(digits), 8);
}

// The Error object of BackendFailure: message, kind, errno, syscall, path, tensorIndex, expectedCrc, actualCrc,
// committed.
Napi::Error FailureToError(Napi::Env env, const Failure& f) {
  std::string kind, message, syscall;
  int errnum = 0;
  switch (f.kind) {
    case Failure::Kind::kIo:
      kind = "io";
      errnum = f.sys.errnum;
      syscall = f.sys.syscall;
      message = std::string(ErrnoName(errnum)) + ": " + std::generic_category().message(errnum) + ", " + syscall +
                " '" + f.sys.path + "'";
      break;
    case Failure::Kind::kCorrupt:
      kind = "corrupt";
      message = f.message;
      break;
    case Failure::Kind::kChecksum:
      kind = "checksum";
      message = "tensor " + std::to_string(f.tensor_index) + ": " + f.message + " (expected " + Hex(f.expected_crc) +
                ", computed " + Hex(f.actual_crc) + ")";
      break;
    case Failure::Kind::kStalled:
      kind = "stalled";
      syscall = f.sys.syscall;
      message = std::string(syscall) + " made no progress: it returned 0 bytes " + std::to_string(kZeroWriteAttempts) +
                " times in a row without an error, '" + f.sys.path + "'";
      break;
    case Failure::Kind::kMemory:
      kind = "memory";
      message = f.message;
      break;
    case Failure::Kind::kInvalid:
    case Failure::Kind::kNone:
      // Unreachable: plans are validated before the job starts. Reported as an internal failure (a library bug,
      // ERR_CHECKPOINT_INTERNAL on the TypeScript side), not an abort, and with no errno: no system call failed.
      kind = "internal";
      message = f.kind == Failure::Kind::kNone ? "the job failed without recording why" : "invalid plan: " + f.message;
      break;
  }
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object o = error.Value();
  o.Set("kind", kind);
  o.Set("errno", errnum);
  o.Set("syscall", syscall);
  o.Set("path", f.path);
  o.Set("tensorIndex", static_cast<double>(f.tensor_index));
  if (f.kind == Failure::Kind::kChecksum) {
    o.Set("expectedCrc", static_cast<double>(f.expected_crc));
    o.Set("actualCrc", static_cast<double>(f.actual_crc));
  }
  if (f.committed) o.Set("committed", true);
  return error;
}

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
  job.path = GetString(env, plan, "path");
  job.tmp_path = GetString(env, plan, "tmpPath");
  job.durable = GetBool(env, plan, "durable");
  job.header_crc_offset = static_cast<size_t>(GetIndex(env, plan, "headerCrcOffset"));
  job.tensor_crc_offset = static_cast<size_t>(GetIndex(env, plan, "tensorCrcOffset"));

  Napi::Value header = Field(plan, "header");
  if (!header.IsTypedArray() || header.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowType(env, "plan.header must be a Uint8Array");
  }
  const ByteSpan header_bytes = ViewBytes(env, header, "plan.header");
  job.header.assign(header_bytes.data, header_bytes.data + header_bytes.length);

  Napi::Value arrays_value = Field(plan, "arrays");
  if (!arrays_value.IsArray()) ThrowType(env, "plan.arrays must be an array");
  Napi::Array arrays = arrays_value.As<Napi::Array>();
  // Our own array of the views: the caller may mutate plan.arrays while we work, this one it cannot reach.
  Napi::Array keep = Napi::Array::New(env, arrays.Length());
  job.arrays.reserve(arrays.Length());
  for (uint32_t i = 0; i < arrays.Length(); i++) {
    Napi::Value view = arrays.Get(i);
    job.arrays.push_back(ViewBytes(env, view, "plan.arrays[" + std::to_string(i) + "]"));
    keep.Set(i, view);
  }

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
  ReadWorker(Napi::Env env, ReadJob job)
      : Napi::AsyncWorker(env, "tfjs_checkpoint.read"),
        deferred_(Napi::Promise::Deferred::New(env)),
        job_(std::move(job)) {}

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
        result.Set(static_cast<uint32_t>(i),
                   job_.map ? ViewBuffer(env, mapped_.mapping, mapped_.views[i]) : TakeBuffer(env, buffers_[i]));
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

  const std::string invalid = ValidateReadJob(job);
  if (!invalid.empty()) throw Napi::RangeError::New(env, "invalid read plan: " + invalid);

  auto* worker = new ReadWorker(env, std::move(job));
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("crc32c", Napi::Function::New(env, CrcFunction<Crc32c>, "crc32c"));
  exports.Set("crc32cPortable", Napi::Function::New(env, CrcFunction<Crc32cPortable>, "crc32cPortable"));
  exports.Set("crc32cCombine", Napi::Function::New(env, CrcCombineFunction, "crc32cCombine"));
  exports.Set("crc32cHardware", Napi::Boolean::New(env, Crc32cHardwareAvailable()));
  return exports;
}

}  // namespace
}  // namespace tfjs_checkpoint

// NODE_API_MODULE pastes its second argument into an identifier: it needs an unqualified name.
static Napi::Object InitTfjsCheckpoint(Napi::Env env, Napi::Object exports) {
  return tfjs_checkpoint::Init(env, exports);
}

NODE_API_MODULE(tfjs_checkpoint, InitTfjsCheckpoint)
