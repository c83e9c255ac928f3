// The dashboard page's files, embedded in the binary at build time (embed_assets.cmake writes
// their bytes into assets.cpp): the page, its script and style, and the vendored uPlot chart
// library (install-deps fetches it from npm, pinned by version and sha256).
#pragma once

#include <cstddef>

namespace cairn::dashboard {

struct Asset {
  const char* path;  // the URL path it is served at
  const char* type;  // its Content-Type
  const unsigned char* data;
  size_t size;
};

extern const Asset kAssets[];
extern const size_t kAssetCount;

}  // namespace cairn::dashboard
