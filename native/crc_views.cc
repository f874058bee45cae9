// CRC32C of several views (see crc_views.h).
#include "crc_views.h"

#include "crc32c.h"

namespace tfjs_checkpoint {

std::vector<uint32_t> CrcOfViews(const std::vector<ByteSpan>& views) {
  std::vector<uint32_t> crcs(views.size(), 0);
  for (size_t i = 0; i < views.size(); i++) {
    if (views[i].length > 0) crcs[i] = Crc32c(views[i].data, views[i].length, 0);
  }
  return crcs;
}

}  // namespace tfjs_checkpoint
