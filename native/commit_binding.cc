// The Node-API face of CommitQueue (commit_queue.h): `new CommitQueue()` in JS, with commit(plan): Promise,
// reset(), close() and an `unfinished` count (plans the queue's thread has not finished: read synchronously, no
// event-loop turn needed). lib/backend/native-backend.ts wraps it as the CommitQueue of backend.ts.
//
// Threading rules:
// - The constructor, commit, reset, close, the settling of promises, the env cleanup hook and the destructor run on
//   the JS thread that created the queue. The plan is unpacked there: strings and small byte arrays (headers, index
//   bytes, lock content) are copied; the tensor arrays are referenced (an Array of the views, held until the plan
//   settles) and only their pointers travel to the queue's thread.
// - The queue's thread executes plans and hands each outcome (plain C++: no env, no JS values, no references) to a
//   thread-safe function, whose JS-thread callback settles the promise and drops the references.
// - While plans are pending, the thread-safe function is ref'd (Node stays alive until they settle, as with
//   AsyncWorker writes) and the JS object is strongly referenced (it cannot be collected with plans in flight).
// - Teardown (the env cleanup hook: process exit, worker termination; or collection of an idle queue): the queue's
//   thread is stopped and joined (the plan running finishes: its arrays stay valid until then), queued plans are
//   dropped, then the thread-safe function is released. The hook is registered after the thread-safe function is
//   created, so it runs before Node's own teardown of that function.
#include "commit_binding.h"

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "commit_plan.h"
#include "commit_queue.h"
#include "js_convert.h"

namespace tfjs_checkpoint {
namespace {

// ---- plan unpacking -----------------------------------------------------------------------------------------

std::vector<uint8_t> GetBytes(Napi::Env env, const Napi::Object& o, const char* name, const std::string& what) {
  Napi::Value v = Field(o, name);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowType(env, what + "." + name + " must be a Uint8Array");
  }
  const ByteSpan span = ViewBytes(env, v, what + "." + name);
  return std::vector<uint8_t>(span.data, span.data + span.length);
}

Napi::Object GetObject(Napi::Env env, const Napi::Object& o, const char* name, const std::string& what) {
  Napi::Value v = Field(o, name);
  if (!v.IsObject()) ThrowType(env, what + "." + name + " must be an object");
  return v.As<Napi::Object>();
}

// The fields of a step that publishes a temp file by renaming it over its target ('link', 'text'): the target
// (`to` of a link, `path` of a text step) into path, `tmpPath` into tmp_path, `durable`.
void UnpackRenamed(Napi::Env env, const Napi::Object& o, const char* target, const std::string& what, CommitStep* s) {
  s->path = GetString(env, o, target, what);
  s->tmp_path = GetString(env, o, "tmpPath", what);
  s->durable = GetBool(env, o, "durable", what);
}

CommitStep UnpackStep(Napi::Env env, const Napi::Object& o, const std::string& what, Napi::Array keep) {
  CommitStep s;
  Napi::Value kind_value = Field(o, "kind");
  if (!kind_value.IsString()) ThrowType(env, what + ".kind must be a string");
  const std::string kind = kind_value.As<Napi::String>().Utf8Value();
  if (kind == "checkpoint") {
    s.kind = CommitStep::Kind::kCheckpoint;
    UnpackWriteJob(env, GetObject(env, o, "write", what), what + ".write", &s.write, keep);
  } else if (kind == "link") {
    s.kind = CommitStep::Kind::kLink;
    s.from = GetString(env, o, "from", what);
    UnpackRenamed(env, o, "to", what, &s);
    Napi::Value fallback = Field(o, "fallback");
    const std::string name = fallback.IsString() ? fallback.As<Napi::String>().Utf8Value() : "";
    if (name == "copy") {
      s.fallback = CommitStep::Fallback::kCopy;
    } else if (name == "fail") {
      s.fallback = CommitStep::Fallback::kFail;
    } else if (fallback.IsObject()) {
      s.fallback = CommitStep::Fallback::kWrite;
      UnpackWriteJob(env, fallback.As<Napi::Object>(), what + ".fallback", &s.write, keep);
    } else {
      ThrowType(env, what + ".fallback must be 'copy', 'fail' or a WritePlan");
    }
  } else if (kind == "checkLock") {
    s.kind = CommitStep::Kind::kCheckLock;
    s.path = GetString(env, o, "path", what);
    s.bytes = GetBytes(env, o, "content", what);
  } else if (kind == "text") {
    s.kind = CommitStep::Kind::kText;
    UnpackRenamed(env, o, "path", what, &s);
    s.bytes = GetBytes(env, o, "bytes", what);
  } else if (kind == "unlink") {
    s.kind = CommitStep::Kind::kUnlink;
    Napi::Value paths_value = Field(o, "paths");
    if (!paths_value.IsArray()) ThrowType(env, what + ".paths must be an array");
    Napi::Array paths = paths_value.As<Napi::Array>();
    for (uint32_t i = 0; i < paths.Length(); i++) {
      Napi::Value p = paths.Get(i);
      const std::string where = what + ".paths[" + std::to_string(i) + "]";
      if (!p.IsString()) ThrowType(env, where + " must be a string");
      std::string path = p.As<Napi::String>().Utf8Value();
      if (path.empty() || path.find('\0') != std::string::npos) {
        ThrowType(env, where + " must be a non-empty path without NUL bytes");
      }
      s.paths.push_back(std::move(path));
    }
  } else {
    ThrowType(env, what + ".kind must be 'checkpoint', 'link', 'checkLock', 'text' or 'unlink'");
  }
  return s;
}

CommitPlanJob UnpackPlan(Napi::Env env, const Napi::Object& plan, Napi::Array keep) {
  CommitPlanJob job;
  Napi::Value label = Field(plan, "label");
  if (!label.IsString()) ThrowType(env, "plan.label must be a string");
  job.label = label.As<Napi::String>().Utf8Value();
  Napi::Value steps_value = Field(plan, "steps");
  if (!steps_value.IsArray()) ThrowType(env, "plan.steps must be an array");
  Napi::Array steps = steps_value.As<Napi::Array>();
  job.steps.reserve(steps.Length());
  for (uint32_t i = 0; i < steps.Length(); i++) {
    const std::string what = "plan.steps[" + std::to_string(i) + "]";
    Napi::Value step = steps.Get(i);
    if (!step.IsObject()) ThrowType(env, what + " must be an object");
    job.steps.push_back(UnpackStep(env, step.As<Napi::Object>(), what, keep));
  }
  const std::string invalid = ValidateCommitPlan(job);
  if (!invalid.empty()) throw Napi::RangeError::New(env, "invalid commit plan: " + invalid);
  return job;
}

// ---- results ------------------------------------------------------------------------------------------------

Napi::Array Warnings(Napi::Env env, const std::vector<CommitWarning>& warnings) {
  Napi::Array out = Napi::Array::New(env, warnings.size());
  for (size_t i = 0; i < warnings.size(); i++) {
    const CommitWarning& w = warnings[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("step", static_cast<double>(w.step));
    o.Set("path", w.sys.path);
    o.Set("errno", w.sys.errnum);
    o.Set("syscall", w.sys.syscall);
    o.Set("message", DescribeFailure(Failure::Io(w.sys)).message);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// The CommitFailure of lib/backend/backend.ts.
Napi::Value OutcomeToError(Napi::Env env, const std::string& label, const CommitOutcome& outcome) {
  Napi::Object o = FailureToError(env, outcome.failure).Value();
  o.Set("plan", label);
  o.Set("step", static_cast<double>(outcome.step));
  o.Set("stepKind", outcome.step_kind == nullptr ? env.Null() : Napi::String::New(env, outcome.step_kind));
  o.Set("stepCommitted", outcome.failure.committed);
  o.Set("committed", outcome.committed);
  if (outcome.failure.kind == Failure::Kind::kAborted) o.Set("abortedBy", outcome.aborted_by);
  o.Set("warnings", Warnings(env, outcome.warnings));
  return o;
}

// ---- the class ----------------------------------------------------------------------------------------------

class CommitQueueWrap : public Napi::ObjectWrap<CommitQueueWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "CommitQueue",
        {InstanceMethod<&CommitQueueWrap::Commit>("commit"), InstanceMethod<&CommitQueueWrap::Reset>("reset"),
         InstanceMethod<&CommitQueueWrap::Close>("close"),
         InstanceAccessor<&CommitQueueWrap::UnfinishedCount>("unfinished")});
  }

  explicit CommitQueueWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CommitQueueWrap>(info), env_(info.Env()) {
    tsfn_ = Tsfn::New(env_, "tfjs_checkpoint.commit", 0, 1, this);
    tsfn_.Unref(env_);  // ref'd only while plans are pending
    queue_ = std::make_unique<CommitQueue>([this](uint64_t id, CommitOutcome outcome) {
      // The queue's thread: plain data only. A closing function (teardown) drops the outcome.
      auto* done = new Done{id, std::move(outcome)};
      if (tsfn_.NonBlockingCall(done) != napi_ok) delete done;
    });
    if (napi_add_env_cleanup_hook(env_, CleanupHook, this) == napi_ok) hook_registered_ = true;
  }

  ~CommitQueueWrap() override {
    if (hook_registered_) napi_remove_env_cleanup_hook(env_, CleanupHook, this);
    Shutdown();
  }

 private:
  struct Done {
    uint64_t id;
    CommitOutcome outcome;
  };
  struct Pending {
    Napi::Promise::Deferred deferred;
    Napi::ObjectReference keep;  // the tensor views of the plan
    std::string label;
  };

  static void CallJs(Napi::Env env, Napi::Function, CommitQueueWrap* self, Done* done) {
    std::unique_ptr<Done> owned(done);
    if (env == nullptr || self == nullptr) return;  // teardown: nobody to tell
    self->Settle(env, *owned);
  }
  using Tsfn = Napi::TypedThreadSafeFunction<CommitQueueWrap, Done, &CommitQueueWrap::CallJs>;

  static void CleanupHook(void* arg) {
    auto* self = static_cast<CommitQueueWrap*>(arg);
    self->hook_registered_ = false;  // it ran: nothing to remove later
    self->Shutdown();
  }

  Napi::Value Commit(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (shut_) throw Napi::Error::New(env, "the commit queue is closed");
    Napi::Object plan = PlanArgument(info);
    Napi::Array keep = Napi::Array::New(env);
    CommitPlanJob job = UnpackPlan(env, plan, keep);
    const uint64_t id = next_id_++;
    Pending p{Napi::Promise::Deferred::New(env), Napi::Persistent(keep.As<Napi::Object>()), job.label};
    Napi::Promise promise = p.deferred.Promise();
    pending_.emplace(id, std::move(p));
    if (pending_.size() == 1) {
      tsfn_.Ref(env);
      Ref();
    }
    if (!queue_->Submit(id, std::move(job))) {
      Forget(env, id);
      throw Napi::Error::New(env, "the commit queue is closed");
    }
    return promise;
  }

  Napi::Value Reset(const Napi::CallbackInfo& info) {
    if (!shut_) queue_->Reset();
    return info.Env().Undefined();
  }

  // Stops the thread. The TypeScript wrapper calls it once every plan has settled; with plans pending it throws.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!pending_.empty()) throw Napi::Error::New(env, "close() with plans pending: await them first");
    Shutdown();
    return env.Undefined();
  }

  // Plans submitted whose execution has not ended on the queue's thread (its mutex-guarded count): lets JS learn
  // that the disk work is over before the thread-safe function's callback has had its event-loop turn. The outcome
  // (result or failure) is still delivered only by the promise; a failed plan has already poisoned the queue.
  Napi::Value UnfinishedCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), shut_ ? 0.0 : static_cast<double>(queue_->Pending()));
  }

  void Settle(Napi::Env env, const Done& done) {
    auto it = pending_.find(done.id);
    if (it == pending_.end()) return;  // shut down meanwhile
    Pending& p = it->second;
    SettleSafely(p.deferred, [&] {
      Napi::HandleScope scope(env);
      if (done.outcome.ok) {
        Napi::Object result = Napi::Object::New(env);
        Napi::Array fallbacks = Napi::Array::New(env, done.outcome.fallbacks.size());
        for (size_t i = 0; i < done.outcome.fallbacks.size(); i++) {
          fallbacks.Set(static_cast<uint32_t>(i), static_cast<double>(done.outcome.fallbacks[i]));
        }
        result.Set("fallbacks", fallbacks);
        result.Set("warnings", Warnings(env, done.outcome.warnings));
        result.Set("finishedAt", static_cast<double>(done.outcome.finished_ns) / 1e6);
        p.deferred.Resolve(result);
      } else {
        p.deferred.Reject(OutcomeToError(env, p.label, done.outcome));
      }
    });
    Forget(env, done.id);
  }

  // Drops a plan's bookkeeping (its references); the last one unrefs the function and the object.
  void Forget(Napi::Env env, uint64_t id) {
    pending_.erase(id);
    if (pending_.empty() && !shut_) {
      tsfn_.Unref(env);
      Unref();
    }
  }

  void Shutdown() {
    if (shut_) return;
    shut_ = true;
    queue_->Stop();  // joins: after this no thread touches the plans' memory or the function
    tsfn_.Release();
    pending_.clear();
  }

  napi_env env_;
  Tsfn tsfn_;
  std::unique_ptr<CommitQueue> queue_;
  std::unordered_map<uint64_t, Pending> pending_;
  uint64_t next_id_ = 1;
  bool shut_ = false;
  bool hook_registered_ = false;
};

}  // namespace

Napi::Function DefineCommitQueueClass(Napi::Env env) { return CommitQueueWrap::Define(env); }

}  // namespace tfjs_checkpoint
