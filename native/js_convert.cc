// Node-API value conversion shared by the bindings (addon.cc, commit_binding.cc): unpacking checked arguments into
// plain C++ values, and failures into the Error objects of lib/backend/backend.ts. JS thread only.
#include "js_convert.h"

#include <cerrno>
#include <cmath>
#include <string>

namespace tfjs_checkpoint {

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }

Napi::Value Field(const Napi::Object& plan, const char* name) { return plan.Get(name); }

std::string GetString(Napi::Env env, const Napi::Object& plan, const char* name, const std::string& what) {
  Napi::Value v = Field(plan, name);
  if (!v.IsString()) ThrowType(env, what + "." + name + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() || s.find('\0') != std::string::npos) {
    ThrowType(env, what + "." + name + " must be a non-empty path without NUL bytes");
  }
  return s;
}

bool GetBool(Napi::Env env, const Napi::Object& plan, const char* name, const std::string& what) {
  Napi::Value v = Field(plan, name);
  if (!v.IsBoolean()) ThrowType(env, what + "." + name + " must be a boolean");
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

uint64_t GetIndex(Napi::Env env, const Napi::Object& plan, const char* name, const std::string& what) {
  return ToIndex(env, Field(plan, name), what + "." + name);
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

void UnpackWriteJob(Napi::Env env, const Napi::Object& plan, const std::string& what, WriteJob* job, Napi::Array keep) {
  job->path = GetString(env, plan, "path", what);
  job->tmp_path = GetString(env, plan, "tmpPath", what);
  job->durable = GetBool(env, plan, "durable", what);
  job->header_crc_offset = static_cast<size_t>(GetIndex(env, plan, "headerCrcOffset", what));
  job->tensor_crc_offset = static_cast<size_t>(GetIndex(env, plan, "tensorCrcOffset", what));

  Napi::Value header = Field(plan, "header");
  if (!header.IsTypedArray() || header.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowType(env, what + ".header must be a Uint8Array");
  }
  const ByteSpan header_bytes = ViewBytes(env, header, what + ".header");
  job->header.assign(header_bytes.data, header_bytes.data + header_bytes.length);

  Napi::Value arrays_value = Field(plan, "arrays");
  if (!arrays_value.IsArray()) ThrowType(env, what + ".arrays must be an array");
  Napi::Array arrays = arrays_value.As<Napi::Array>();
  // Views go into the caller's `keep` array: the caller may mutate plan.arrays while we work, `keep` it cannot reach.
  job->arrays.reserve(arrays.Length());
  for (uint32_t i = 0; i < arrays.Length(); i++) {
    Napi::Value view = arrays.Get(i);
    job->arrays.push_back(ViewBytes(env, view, what + ".arrays[" + std::to_string(i) + "]"));
    keep.Set(keep.Length(), view);
  }
}

Napi::Error FailureToError(Napi::Env env, const Failure& f) {
  const FailureText t = DescribeFailure(f);
  Napi::Error error = Napi::Error::New(env, t.message);
  Napi::Object o = error.Value();
  o.Set("kind", t.kind);
  o.Set("errno", t.errnum);
  o.Set("syscall", t.syscall);
  o.Set("path", f.path);
  o.Set("tensorIndex", static_cast<double>(f.tensor_index));
  if (f.kind == Failure::Kind::kChecksum) {
    o.Set("expectedCrc", static_cast<double>(f.expected_crc));
    o.Set("actualCrc", static_cast<double>(f.actual_crc));
  }
  if (f.committed) o.Set("committed", true);
  return error;
}

}  // namespace tfjs_checkpoint
