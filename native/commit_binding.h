// The CommitQueue class exported by the addon (see commit_binding.cc for its threading rules).
#ifndef TFJS_CHECKPOINT_COMMIT_BINDING_H_
#define TFJS_CHECKPOINT_COMMIT_BINDING_H_

#include <napi.h>

namespace tfjs_checkpoint {

// The JS constructor `CommitQueue` for this env (each env, main thread or worker, defines its own).
Napi::Function DefineCommitQueueClass(Napi::Env env);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_COMMIT_BINDING_H_
