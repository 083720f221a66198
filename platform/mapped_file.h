// MappedFile: a whole file, read-only, as one contiguous byte range.
//
// Mapped with mmap when possible; otherwise (or when asked) read() into a
// 64-byte aligned buffer, so the loaders see the same bytes either way.
// A missing file, a directory, an unreadable file are io_error statuses; an
// empty file is a bad_file status (nothing can be a model in 0 bytes); a file
// above max_bytes is too_long.
//
//   KESTREL_TRY_ASSIGN(auto f, MappedFile::open("model.gguf"));
//   parse(f->data(), f->size());
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "platform/status.h"

namespace kestrel {

struct MapOptions {
  bool use_mmap = true;     // false: read() the file into an aligned buffer
  uint64_t max_bytes = 0;   // 0: no cap beyond size_t
};

class MappedFile {
 public:
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  static Expected<std::unique_ptr<MappedFile>> open(const std::string& path, const MapOptions& options = {});

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool is_mapped() const { return mapped_; }  // false: a read() copy
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::string path_;
};

}  // namespace kestrel
