// CRC32C of several byte views, each from 0: the pieces of an S3 upload's parts, which are streamed from views of the
// tensors' own arrays. Used by the addon's crc32cViews (addon.cc), which runs it on a libuv pool thread so the JS
// thread stays free (for hashing and sending the other parts in flight).
//
// Threading: no Node headers and no shared state: callable from any thread. The views must stay valid and unchanged
// for the duration of the call (the binding references their JS objects until the promise settles). Invariant: a
// view of nonzero length has a data pointer (the binding's ViewBytes gives one).
#ifndef TFJS_CHECKPOINT_CRC_VIEWS_H_
#define TFJS_CHECKPOINT_CRC_VIEWS_H_

#include <cstdint>
#include <vector>

#include "tensor_writer.h"  // ByteSpan

namespace tfjs_checkpoint {

// The CRC32C of each view, in order (an empty view's is 0, the CRC32C of no bytes).
std::vector<uint32_t> CrcOfViews(const std::vector<ByteSpan>& views);

}  // namespace tfjs_checkpoint

#endif  // TFJS_CHECKPOINT_CRC_VIEWS_H_
