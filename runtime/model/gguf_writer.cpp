#include "runtime/model/gguf_writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "platform/checked_math.h"

namespace kestrel::gguf {

namespace {

using ull = unsigned long long;

// Little-endian encoders (kestrel targets are little-endian; the reader
// handles big-endian hosts, the writer documents the restriction).
void put_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& s, std::string_view v) {
  put_u64(s, v.size());
  s.append(v);
}

size_t width_of(ValueType t) {
  switch (t) {
    case ValueType::u8: case ValueType::i8: case ValueType::boolean: return 1;
    case ValueType::u16: case ValueType::i16: return 2;
    case ValueType::u32: case ValueType::i32: case ValueType::f32: return 4;
    case ValueType::u64: case ValueType::i64: case ValueType::f64: return 8;
    default: return 0;
  }
}

struct VectorSink {
  std::vector<uint8_t>& out;
  Status write(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
    return {};
  }
};

struct FileSink {
  std::FILE* f;
  const std::string& path;
  Status write(const void* p, size_t n) {
    if (n != 0 && std::fwrite(p, 1, n, f) != n)
      return Status::io_error("cannot write '%s': %s", path.c_str(), std::strerror(errno));
    return {};
  }
};

constexpr uint8_t kZeros[256] = {};

template <typename Sink>
Status write_padding(Sink& sink, uint64_t n) {
  while (n > 0) {
    const size_t k = n < sizeof kZeros ? static_cast<size_t>(n) : sizeof kZeros;
    KESTREL_TRY(sink.write(kZeros, k));
    n -= k;
  }
  return {};
}

}  // namespace

void Writer::set_raw(std::string_view key, uint32_t type, std::string_view encoded) {
  for (Kv& kv : kvs_) {
    if (kv.key == key) {
      kv.type = type;
      kv.encoded = std::string(encoded);
      return;
    }
  }
  append_raw(key, type, encoded);
}

void Writer::append_raw(std::string_view key, uint32_t type, std::string_view encoded) {
  kvs_.push_back(Kv{std::string(key), type, std::string(encoded)});
}

bool Writer::remove(std::string_view key) {
  for (auto it = kvs_.begin(); it != kvs_.end(); ++it) {
    if (it->key == key) {
      kvs_.erase(it);
      return true;
    }
  }
  return false;
}

bool Writer::has(std::string_view key) const {
  for (const Kv& kv : kvs_)
    if (kv.key == key) return true;
  return false;
}

void Writer::set_scalar(std::string_view key, ValueType t, const void* v, size_t n) {
  set_raw(key, static_cast<uint32_t>(t), std::string_view(static_cast<const char*>(v), n));
}

void Writer::set_u8(std::string_view key, uint8_t v) { set_scalar(key, ValueType::u8, &v, 1); }
void Writer::set_i8(std::string_view key, int8_t v) { set_scalar(key, ValueType::i8, &v, 1); }
void Writer::set_u16(std::string_view key, uint16_t v) { set_scalar(key, ValueType::u16, &v, 2); }
void Writer::set_i16(std::string_view key, int16_t v) { set_scalar(key, ValueType::i16, &v, 2); }
void Writer::set_u32(std::string_view key, uint32_t v) { set_scalar(key, ValueType::u32, &v, 4); }
void Writer::set_i32(std::string_view key, int32_t v) { set_scalar(key, ValueType::i32, &v, 4); }
void Writer::set_u64(std::string_view key, uint64_t v) { set_scalar(key, ValueType::u64, &v, 8); }
void Writer::set_i64(std::string_view key, int64_t v) { set_scalar(key, ValueType::i64, &v, 8); }
void Writer::set_f32(std::string_view key, float v) { set_scalar(key, ValueType::f32, &v, 4); }
void Writer::set_f64(std::string_view key, double v) { set_scalar(key, ValueType::f64, &v, 8); }
void Writer::set_bool(std::string_view key, bool v) {
  const uint8_t b = v ? 1 : 0;
  set_scalar(key, ValueType::boolean, &b, 1);
}

void Writer::set_string(std::string_view key, std::string_view v) {
  std::string enc;
  put_str(enc, v);
  set_raw(key, static_cast<uint32_t>(ValueType::string), enc);
}

void Writer::set_array(std::string_view key, ValueType elem_type, const void* elems, uint64_t count) {
  std::string enc;
  put_u32(enc, static_cast<uint32_t>(elem_type));
  put_u64(enc, count);
  const size_t w = width_of(elem_type);
  if (count != 0 && w != 0) enc.append(static_cast<const char*>(elems), static_cast<size_t>(count) * w);
  set_raw(key, static_cast<uint32_t>(ValueType::array), enc);
}

void Writer::set_f32_array(std::string_view key, std::span<const float> v) {
  set_array(key, ValueType::f32, v.data(), v.size());
}

void Writer::set_i32_array(std::string_view key, std::span<const int32_t> v) {
  set_array(key, ValueType::i32, v.data(), v.size());
}

void Writer::set_string_array(std::string_view key, std::span<const std::string> v) {
  std::string enc;
  put_u32(enc, static_cast<uint32_t>(ValueType::string));
  put_u64(enc, v.size());
  for (const std::string& s : v) put_str(enc, s);
  set_raw(key, static_cast<uint32_t>(ValueType::array), enc);
}

void Writer::set_string_array(std::string_view key, std::span<const std::string_view> v) {
  std::string enc;
  put_u32(enc, static_cast<uint32_t>(ValueType::string));
  put_u64(enc, v.size());
  for (std::string_view s : v) put_str(enc, s);
  set_raw(key, static_cast<uint32_t>(ValueType::array), enc);
}

void Writer::set_alignment(uint32_t alignment) {
  set_u32("general.alignment", alignment);
  // Bad values are written to the key only, so the layout stays sane.
  if (is_pow2(alignment) && alignment <= kMaxAlignment) alignment_ = alignment;
}

Status Writer::check_tensor(std::string_view name, DType type, std::span<const int64_t> ne, uint64_t nbytes) const {
  const int nl = static_cast<int>(name.size());
  if (name.empty() || name.size() > kMaxTensorNameBytes)
    return Status::invalid_argument("tensor name '%.*s': empty or longer than %llu bytes", nl, name.data(),
                                    static_cast<ull>(kMaxTensorNameBytes));
  for (const Tensor& t : tensors_)
    if (t.info.name == name) return Status::invalid_argument("duplicate tensor name '%.*s'", nl, name.data());
  const DTypeTraits* tr = dtype_traits(type);
  if (!tr) return Status::invalid_argument("tensor '%.*s': unknown type", nl, name.data());
  if (ne.empty() || ne.size() > static_cast<size_t>(kMaxDims))
    return Status::invalid_argument("tensor '%.*s': %zu dims (1 to %d)", nl, name.data(), ne.size(), kMaxDims);
  uint64_t rows = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] <= 0) return Status::invalid_argument("tensor '%.*s': dim %zu is %lld", nl, name.data(), d,
                                                    static_cast<long long>(ne[d]));
    if (d > 0 && !checked_mul(rows, static_cast<uint64_t>(ne[d]), rows))
      return Status::invalid_argument("tensor '%.*s': size overflows", nl, name.data());
  }
  if (ne[0] % tr->block_size != 0)
    return Status::invalid_argument("tensor '%.*s': dim 0 (%lld) not a multiple of the block size %d", nl,
                                    name.data(), static_cast<long long>(ne[0]), tr->block_size);
  uint64_t row_bytes = 0, expect = 0;
  if (!checked_mul(static_cast<uint64_t>(ne[0] / tr->block_size), tr->type_size, row_bytes) ||
      !checked_mul(row_bytes, rows, expect))
    return Status::invalid_argument("tensor '%.*s': size overflows", nl, name.data());
  if (expect != nbytes)
    return Status::invalid_argument("tensor '%.*s': %llu bytes given, the shape needs %llu", nl, name.data(),
                                    static_cast<ull>(nbytes), static_cast<ull>(expect));
  return {};
}

Status Writer::add_tensor(std::string_view name, DType type, std::initializer_list<int64_t> ne, const void* data,
                          uint64_t nbytes) {
  return add_tensor(name, type, std::span<const int64_t>(ne.begin(), ne.size()), data, nbytes);
}

Status Writer::add_tensor(std::string_view name, DType type, std::span<const int64_t> ne, const void* data,
                          uint64_t nbytes) {
  KESTREL_TRY(check_tensor(name, type, ne, nbytes));
  if (data == nullptr) return Status::invalid_argument("tensor '%.*s': null data", static_cast<int>(name.size()),
                                                       name.data());
  RawTensor t;
  t.name = std::string(name);
  t.type_id = static_cast<uint32_t>(type);
  for (int64_t d : ne) t.dims.push_back(static_cast<uint64_t>(d));
  t.data = data;
  t.nbytes = nbytes;
  tensors_.push_back(Tensor{std::move(t), nullptr});
  return {};
}

Status Writer::add_tensor_copy(std::string_view name, DType type, std::span<const int64_t> ne, const void* data,
                               uint64_t nbytes) {
  KESTREL_TRY(check_tensor(name, type, ne, nbytes));
  size_t n = 0;
  if (data == nullptr || !checked_to_size(nbytes, n))
    return Status::invalid_argument("tensor '%.*s': null data or too large", static_cast<int>(name.size()),
                                    name.data());
  std::unique_ptr<uint8_t[]> owned(new (std::nothrow) uint8_t[n]);
  if (!owned) return Status::out_of_memory("tensor '%.*s': cannot copy %zu bytes", static_cast<int>(name.size()),
                                           name.data(), n);
  std::memcpy(owned.get(), data, n);
  KESTREL_TRY(add_tensor(name, type, ne, owned.get(), nbytes));
  tensors_.back().owned = std::move(owned);
  return {};
}

void Writer::add_raw_tensor(RawTensor t) { tensors_.push_back(Tensor{std::move(t), nullptr}); }

template <typename Sink>
Status Writer::emit(Sink& sink) const {
  std::string head;
  head.append("GGUF", 4);
  put_u32(head, version_);
  put_u64(head, tensors_.size());
  put_u64(head, kvs_.size());
  for (const Kv& kv : kvs_) {
    put_str(head, kv.key);
    put_u32(head, kv.type);
    head.append(kv.encoded);
  }
  // Data offsets: each tensor at the aligned end of the previous one.
  uint64_t running = 0;
  std::vector<uint64_t> placed(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const RawTensor& t = tensors_[i].info;
    placed[i] = running;
    uint64_t end = 0;
    if (!checked_add(running, t.nbytes, end) || !checked_align_up(end, alignment_, running))
      return Status::invalid_argument("tensor data size overflows at '%s'", t.name.c_str());
    put_str(head, t.name);
    put_u32(head, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) put_u64(head, d);
    put_u32(head, t.type_id);
    put_u64(head, t.offset.value_or(placed[i]));
  }
  KESTREL_TRY(sink.write(head.data(), head.size()));
  uint64_t data_start = 0;
  if (!checked_align_up(head.size(), alignment_, data_start)) return Status::invalid_argument("header too large");
  if (!tensors_.empty()) KESTREL_TRY(write_padding(sink, data_start - head.size()));
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const RawTensor& t = tensors_[i].info;
    if (t.nbytes != 0) {
      size_t n = 0;
      if (!checked_to_size(t.nbytes, n) || t.data == nullptr)
        return Status::invalid_argument("tensor '%s': no data", t.name.c_str());
      KESTREL_TRY(sink.write(t.data, n));
    }
    const uint64_t end = placed[i] + t.nbytes;  // checked above
    uint64_t next = 0;
    (void)checked_align_up(end, alignment_, next);
    KESTREL_TRY(write_padding(sink, next - end));
  }
  return {};
}

Expected<std::vector<uint8_t>> Writer::to_bytes() const {
  std::vector<uint8_t> out;
  VectorSink sink{out};
  KESTREL_TRY(emit(sink));
  return out;
}

Status Writer::write_file(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return Status::io_error("cannot create '%s': %s", tmp.c_str(), std::strerror(errno));
  FileSink sink{f, tmp};
  Status s = emit(sink);
  if (std::fclose(f) != 0 && s.ok()) s = Status::io_error("cannot write '%s': %s", tmp.c_str(), std::strerror(errno));
  if (s.ok() && std::rename(tmp.c_str(), path.c_str()) != 0)
    s = Status::io_error("cannot rename '%s' to '%s': %s", tmp.c_str(), path.c_str(), std::strerror(errno));
  if (!s.ok()) std::remove(tmp.c_str());
  return s;
}

}  // namespace kestrel::gguf
