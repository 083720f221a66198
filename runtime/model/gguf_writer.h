// GGUF v3 (or v2) writer: metadata of every value type, tensors of any DType,
// data aligned to general.alignment. Used by `kestrel convert`, by tests (to
// build small models and deliberately broken files) and by quantization.
//
//   gguf::Writer w;
//   w.set_string("general.architecture", "llama");
//   w.set_u32("llama.block_count", 5);
//   KESTREL_TRY(w.add_tensor("token_embd.weight", DType::F32, {64, 512}, data, 64 * 512 * 4));
//   KESTREL_TRY(w.write_file("out.gguf"));
//
// Layout written: header, metadata in insertion order, tensor infos in
// insertion order, zero padding to the alignment, then each tensor's data
// followed by zero padding to the alignment (the layout gguf::File requires).
// Tensor data passed to add_tensor is borrowed: it must stay valid until the
// last to_bytes / write_file call. add_tensor_copy keeps its own copy.
//
// The set_raw / add_raw_tensor escape hatches write whatever they are given
// (unknown types, wrong offsets, duplicate keys): they exist to build bad files.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ops/dtype.h"
#include "platform/status.h"
#include "runtime/model/gguf.h"

namespace kestrel::gguf {

class Writer {
 public:
  explicit Writer(uint32_t version = 3) : version_(version) {}

  // ---- metadata: set_* replaces an existing key in place, else appends ----
  void set_u8(std::string_view key, uint8_t v);
  void set_i8(std::string_view key, int8_t v);
  void set_u16(std::string_view key, uint16_t v);
  void set_i16(std::string_view key, int16_t v);
  void set_u32(std::string_view key, uint32_t v);
  void set_i32(std::string_view key, int32_t v);
  void set_u64(std::string_view key, uint64_t v);
  void set_i64(std::string_view key, int64_t v);
  void set_f32(std::string_view key, float v);
  void set_f64(std::string_view key, double v);
  void set_bool(std::string_view key, bool v);
  void set_string(std::string_view key, std::string_view v);
  // An array of a fixed-width element type: `count` elements of
  // that type's size, host order (little-endian hosts only).
  void set_array(std::string_view key, ValueType elem_type, const void* elems, uint64_t count);
  void set_f32_array(std::string_view key, std::span<const float> v);
  void set_i32_array(std::string_view key, std::span<const int32_t> v);
  void set_string_array(std::string_view key, std::span<const std::string> v);
  void set_string_array(std::string_view key, std::span<const std::string_view> v);
  // A value given as its encoded bytes (what follows the type field in the
  // file, e.g. from File::raw_value). `type` is written as is.
  void set_raw(std::string_view key, uint32_t type, std::string_view encoded);
  // Appends even when the key exists (duplicate keys, for bad-file tests).
  void append_raw(std::string_view key, uint32_t type, std::string_view encoded);
  bool remove(std::string_view key);
  bool has(std::string_view key) const;

  // Sets general.alignment (u32) and the layout's alignment. Default 32.
  // Must be a power of two <= kMaxAlignment (otherwise only the key is
  // written, for bad files).
  void set_alignment(uint32_t alignment);
  uint32_t alignment() const { return alignment_; }

  // ---- tensors ----
  // ne: 1 to 4 dims, innermost first (GGUF order); nbytes must equal the size
  // the type and shape imply. Errors are invalid_argument.
  Status add_tensor(std::string_view name, DType type, std::initializer_list<int64_t> ne, const void* data,
                    uint64_t nbytes);
  Status add_tensor(std::string_view name, DType type, std::span<const int64_t> ne, const void* data,
                    uint64_t nbytes);
  Status add_tensor_copy(std::string_view name, DType type, std::span<const int64_t> ne, const void* data,
                         uint64_t nbytes);

  // Anything goes: the info is written as given; the data (nbytes, may be 0)
  // is placed at the running aligned position; `offset`, when set, replaces
  // the computed data offset in the info.
  struct RawTensor {
    std::string name;
    uint32_t type_id = 0;
    std::vector<uint64_t> dims;
    const void* data = nullptr;
    uint64_t nbytes = 0;
    std::optional<uint64_t> offset;
  };
  void add_raw_tensor(RawTensor t);
  size_t n_tensors() const { return tensors_.size(); }

  // ---- output ----
  Expected<std::vector<uint8_t>> to_bytes() const;
  // Writes path + ".tmp" and renames it over path, so a failed write never
  // leaves a half file under the final name.
  Status write_file(const std::string& path) const;

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    std::string encoded;
  };
  struct Tensor {
    RawTensor info;
    std::unique_ptr<uint8_t[]> owned;  // add_tensor_copy
  };
  template <typename Sink>
  Status emit(Sink& sink) const;
  Status check_tensor(std::string_view name, DType type, std::span<const int64_t> ne, uint64_t nbytes) const;
  void set_scalar(std::string_view key, ValueType t, const void* v, size_t n);

  uint32_t version_;
  uint32_t alignment_ = kDefaultAlignment;
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
};

}  // namespace kestrel::gguf
