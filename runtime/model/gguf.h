// GGUF v2/v3 reader: parses and validates a whole file before anything uses it.
//
// Every read is bounded by the bytes left; counts are checked against the file
// size and caps before anything is allocated; sizes and offsets go through
// checked arithmetic (see ../shared/BAD-INPUTS.md rows 1-9, 13). Errors are
// bad_file statuses that name the offset or key.
//
//   KESTREL_TRY_ASSIGN(auto f, gguf::File::open("model.gguf"));
//   KESTREL_TRY_ASSIGN(std::string_view arch, f->get_string("general.architecture"));
//   const gguf::TensorInfo* t = f->find_tensor("token_embd.weight");
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ops/dtype.h"
#include "platform/status.h"

namespace kestrel::gguf {

// Caps on counts read from a file, checked before anything is allocated from
// them (each count is also checked against the bytes left in the file).
inline constexpr uint64_t kMaxKeys = uint64_t{1} << 16;          // metadata entries
inline constexpr uint64_t kMaxTensors = uint64_t{1} << 20;       // tensor infos
inline constexpr uint64_t kMaxKeyBytes = 65535;                  // a key's length (GGUF spec)
inline constexpr uint64_t kMaxStringBytes = uint64_t{1} << 26;   // a string value (64 MiB)
inline constexpr uint64_t kMaxArrayLength = uint64_t{1} << 26;   // elements in one array value
inline constexpr uint64_t kMaxTensorNameBytes = 256;             // ggml itself allows < 64
inline constexpr int kMaxDims = 4;
inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr uint32_t kMaxAlignment = 65536;                 // a power of two, 1..64 KiB
// Other rules: arrays of arrays are rejected; keys must be non-empty and unique;
// tensor names non-empty and unique; dims >= 1; dim 0 a multiple of the block
// size; tensor data laid out in tensor-info order, each tensor at the aligned
// end of the previous one (no overlap, no hole), ending within the file (except
// with vocab_only, where absent data leaves TensorInfo::data null). Tensor types
// kestrel does not know, and q8_K (an activation-only type), are unsupported.

enum class ValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* value_type_name(ValueType t);

struct TensorInfo {
  std::string name;
  DType type = DType::F32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  uint64_t offset = 0;       // from the start of the file (data section offset included)
  uint64_t nbytes = 0;
  const void* data = nullptr;  // into the mapped / read file; valid while the File lives
};

struct OpenOptions {
  bool use_mmap = true;             // false: read() the whole file into memory
  bool vocab_only = false;          // tensors may be absent / the data section empty
  uint64_t max_file_bytes = 0;      // 0: no cap beyond the file system's
};

// One metadata entry, for listing (inspect).
struct KeyInfo {
  std::string_view key;
  ValueType type;
  ValueType array_type;  // when type == array
  uint64_t count;        // array length (1 for scalars)
};

class File {
 public:
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  static Expected<std::unique_ptr<File>> open(const std::string& path, const OpenOptions& options = {});
  // Parses a caller-owned buffer (tests, fuzzing); the buffer must outlive the File.
  static Expected<std::unique_ptr<File>> from_memory(const void* data, size_t size,
                                                     const OpenOptions& options = {});

  uint32_t version() const;
  uint32_t alignment() const;
  uint64_t file_size() const;

  size_t n_keys() const;
  KeyInfo key_info(size_t i) const;
  bool has(std::string_view key) const;

  // Typed accessors: not_found / wrong type or width give a bad_file status
  // naming the key. Integer getters accept any integer type whose value fits.
  // One exception, a convention of the format: get_i32 reads a u32
  // 0xFFFFFFFF as -1 (llama.cpp writes absent token ids that way).
  Expected<std::string_view> get_string(std::string_view key) const;
  Expected<uint32_t> get_u32(std::string_view key) const;
  Expected<uint64_t> get_u64(std::string_view key) const;
  Expected<int32_t> get_i32(std::string_view key) const;
  Expected<float> get_f32(std::string_view key) const;  // f32 or f64 values
  Expected<bool> get_bool(std::string_view key) const;
  // Arrays: element type must match (any integer type for the integer arrays,
  // values must fit).
  Expected<std::vector<std::string_view>> get_string_array(std::string_view key) const;
  Expected<std::vector<float>> get_f32_array(std::string_view key) const;
  Expected<std::vector<int32_t>> get_i32_array(std::string_view key) const;
  // Length of an array value without reading it.
  Expected<uint64_t> get_array_size(std::string_view key) const;

  // The encoded bytes of entry i's value as stored in the file, after its
  // type field (for arrays: element type, count, elements). Lets a writer copy
  // metadata verbatim.
  std::string_view raw_value(size_t i) const;
  // Offset of the tensor data section from the start of the file.
  uint64_t data_offset() const;

  const std::vector<TensorInfo>& tensors() const;
  const TensorInfo* find_tensor(std::string_view name) const;  // nullptr if absent

  struct Impl;

 private:
  explicit File(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kestrel::gguf
