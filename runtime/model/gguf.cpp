// GGUF v2/v3 reader. One pass over the file builds an index of the metadata
// (hash map key -> entry) and the tensor table; every read goes through a
// Cursor that checks the bytes left, and every size through checked_math.
// Values are not copied: entries point into the file bytes, and the typed
// accessors decode them on demand.
#include "runtime/model/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "platform/checked_math.h"
#include "platform/mapped_file.h"

namespace kestrel::gguf {

namespace {

using ull = unsigned long long;

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) {
    uint8_t b[sizeof v];
    std::memcpy(b, &v, sizeof v);
    std::reverse(b, b + sizeof v);
    std::memcpy(&v, b, sizeof v);
  }
  return v;
}

constexpr uint32_t kLastValueType = static_cast<uint32_t>(ValueType::f64);

// Bytes of one scalar of a fixed-width type; 0 for string / array.
uint64_t fixed_width(ValueType t) {
  switch (t) {
    case ValueType::u8: case ValueType::i8: case ValueType::boolean: return 1;
    case ValueType::u16: case ValueType::i16: return 2;
    case ValueType::u32: case ValueType::i32: case ValueType::f32: return 4;
    case ValueType::u64: case ValueType::i64: case ValueType::f64: return 8;
    case ValueType::string: case ValueType::array: return 0;
  }
  return 0;
}

bool is_integer(ValueType t) {
  switch (t) {
    case ValueType::u8: case ValueType::i8: case ValueType::u16: case ValueType::i16:
    case ValueType::u32: case ValueType::i32: case ValueType::u64: case ValueType::i64: return true;
    default: return false;
  }
}

// Bounded reads over [base, base + size). Errors name the offset and what was
// being read.
struct Cursor {
  const uint8_t* base;
  uint64_t size;
  uint64_t pos = 0;

  uint64_t left() const { return size - pos; }

  Status need(uint64_t n, const char* what) const {
    if (n > left())
      return Status::bad_file("truncated at offset %llu: %s needs %llu bytes, %llu left", static_cast<ull>(pos), what,
                              static_cast<ull>(n), static_cast<ull>(left()));
    return {};
  }
  Expected<uint32_t> u32(const char* what) {
    KESTREL_TRY(need(4, what));
    uint32_t v = load_le<uint32_t>(base + pos);
    pos += 4;
    return v;
  }
  Expected<uint64_t> u64(const char* what) {
    KESTREL_TRY(need(8, what));
    uint64_t v = load_le<uint64_t>(base + pos);
    pos += 8;
    return v;
  }
  // u64 length + bytes; the length is checked against `cap` and the bytes left.
  Expected<std::string_view> str(const char* what, uint64_t cap) {
    const uint64_t at = pos;
    KESTREL_TRY_ASSIGN(uint64_t n, u64(what));
    if (n > cap)
      return Status::bad_file("%s at offset %llu has length %llu, above the cap of %llu", what, static_cast<ull>(at),
                              static_cast<ull>(n), static_cast<ull>(cap));
    KESTREL_TRY(need(n, what));
    std::string_view s(reinterpret_cast<const char*>(base + pos), static_cast<size_t>(n));
    pos += n;
    return s;
  }
};

struct Kv {
  std::string_view key;
  ValueType type = ValueType::u8;
  ValueType array_type = ValueType::u8;
  uint64_t count = 1;
  const uint8_t* value = nullptr;  // scalar value, or the first array element
  std::string_view raw;            // everything after the type field
};

// Skips over `count` values of `t` starting at c.pos, validating them.
Status skip_values(Cursor& c, ValueType t, uint64_t count, const char* what) {
  if (t == ValueType::string) {
    // Every string takes at least its 8-byte length: a count that cannot fit is
    // rejected before the loop runs.
    uint64_t min_bytes = 0;
    if (!checked_mul(count, 8, min_bytes) || min_bytes > c.left())
      return Status::bad_file("truncated at offset %llu: %llu strings cannot fit in the %llu bytes left",
                              static_cast<ull>(c.pos), static_cast<ull>(count), static_cast<ull>(c.left()));
    for (uint64_t i = 0; i < count; ++i) {
      auto r = c.str(what, kMaxStringBytes);
      if (!r.ok()) return std::move(r).take_status();
    }
    return {};
  }
  const uint64_t w = fixed_width(t);
  uint64_t bytes = 0;
  if (!checked_mul(count, w, bytes))
    return Status::bad_file("array of %llu %s at offset %llu: size overflows", static_cast<ull>(count),
                            value_type_name(t), static_cast<ull>(c.pos));
  KESTREL_TRY(c.need(bytes, what));
  if (t == ValueType::boolean) {
    for (uint64_t i = 0; i < count; ++i)
      if (c.base[c.pos + i] > 1)
        return Status::bad_file("bool at offset %llu has value %u (not 0 or 1)", static_cast<ull>(c.pos + i),
                                c.base[c.pos + i]);
  }
  c.pos += bytes;
  return {};
}

Status check_value_type(uint32_t raw, uint64_t at, std::string_view key) {
  if (raw > kLastValueType)
    return Status::bad_file("key '%.*s' at offset %llu has unknown value type %u", static_cast<int>(key.size()),
                            key.data(), static_cast<ull>(at), raw);
  return {};
}

const char* ggml_type_name_or_null(uint32_t id) {
  // Names of ggml types kestrel does not load, for clearer "unsupported" messages.
  switch (id) {
    case 9: return "q8_1";
    case 10: return "q2_K"; case 11: return "q3_K"; case 16: return "iq2_xxs"; case 17: return "iq2_xs";
    case 18: return "iq3_xxs"; case 19: return "iq1_s"; case 20: return "iq4_nl"; case 21: return "iq3_s";
    case 22: return "iq2_s"; case 23: return "iq4_xs"; case 27: return "i64"; case 28: return "f64";
    case 29: return "iq1_m"; case 34: return "tq1_0"; case 35: return "tq2_0";
    default: return nullptr;
  }
}

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::u8: return "u8";
    case ValueType::i8: return "i8";
    case ValueType::u16: return "u16";
    case ValueType::i16: return "i16";
    case ValueType::u32: return "u32";
    case ValueType::i32: return "i32";
    case ValueType::f32: return "f32";
    case ValueType::boolean: return "bool";
    case ValueType::string: return "string";
    case ValueType::array: return "array";
    case ValueType::u64: return "u64";
    case ValueType::i64: return "i64";
    case ValueType::f64: return "f64";
  }
  return "unknown";
}

struct File::Impl {
  std::unique_ptr<MappedFile> mapped;  // null for from_memory
  const uint8_t* base = nullptr;
  uint64_t size = 0;
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<Kv> kvs;
  std::unordered_map<std::string_view, size_t> kv_index;
  std::vector<TensorInfo> tensors;
  std::unordered_map<std::string_view, size_t> tensor_index;  // views into tensors[i].name

  Status parse(const OpenOptions& options);
  Status parse_header(Cursor& c, uint64_t& n_tensors, uint64_t& n_kv);
  Status parse_kv(Cursor& c, uint64_t i);
  Status parse_tensor_info(Cursor& c, uint64_t i, std::unordered_set<std::string_view>& names);
  Status check_layout(const OpenOptions& options);
  Expected<const Kv*> find(std::string_view key) const;
};

namespace {

Status type_error(std::string_view key, const Kv& kv, const char* expected) {
  if (kv.type == ValueType::array)
    return Status::bad_file("key '%.*s' is an array of %s, expected %s", static_cast<int>(key.size()), key.data(),
                            value_type_name(kv.array_type), expected);
  return Status::bad_file("key '%.*s' has type %s, expected %s", static_cast<int>(key.size()), key.data(),
                          value_type_name(kv.type), expected);
}

// An integer value of any width and signedness.
struct AnyInt {
  bool negative = false;
  uint64_t magnitude = 0;  // |value|; for negative values, -value as unsigned
  int64_t as_signed() const { return negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude); }
};

AnyInt load_int(ValueType t, const uint8_t* p) {
  auto sgn = [](int64_t v) {
    AnyInt r;
    r.negative = v < 0;
    r.magnitude = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    return r;
  };
  switch (t) {
    case ValueType::u8: return {false, p[0]};
    case ValueType::i8: return sgn(static_cast<int8_t>(p[0]));
    case ValueType::u16: return {false, load_le<uint16_t>(p)};
    case ValueType::i16: return sgn(load_le<int16_t>(p));
    case ValueType::u32: return {false, load_le<uint32_t>(p)};
    case ValueType::i32: return sgn(load_le<int32_t>(p));
    case ValueType::u64: return {false, load_le<uint64_t>(p)};
    case ValueType::i64: return sgn(load_le<int64_t>(p));
    default: return {};
  }
}

bool fits_i32(const AnyInt& v) {
  return v.negative ? v.magnitude <= uint64_t{1} << 31 : v.magnitude <= 0x7fffffffu;
}

}  // namespace

Status File::Impl::parse_header(Cursor& c, uint64_t& n_tensors, uint64_t& n_kv) {
  KESTREL_TRY(c.need(4, "magic"));
  if (std::memcmp(base, "GGUF", 4) != 0) {
    char shown[5] = {};
    for (int i = 0; i < 4; ++i) shown[i] = (base[i] >= 0x20 && base[i] < 0x7f) ? static_cast<char>(base[i]) : '?';
    return Status::bad_file("not a GGUF file: magic is \"%s\" (%02x %02x %02x %02x), expected \"GGUF\"", shown,
                            base[0], base[1], base[2], base[3]);
  }
  c.pos = 4;
  KESTREL_TRY_ASSIGN(version, c.u32("version"));
  if (version == 0) return Status::bad_file("invalid GGUF version 0");
  if (version == 1) return Status::unsupported("GGUF version 1 is not supported (2 and 3 are)");
  if (version > 3) {
    const uint32_t swapped = __builtin_bswap32(version);
    if (swapped >= 1 && swapped <= 3)
      return Status::unsupported("byte-swapped (big-endian) file: version reads as 0x%08x, %u when swapped", version,
                                 swapped);
    return Status::unsupported("unknown GGUF version %u (2 and 3 are supported)", version);
  }
  KESTREL_TRY_ASSIGN(n_tensors, c.u64("tensor count"));
  KESTREL_TRY_ASSIGN(n_kv, c.u64("metadata key count"));
  // Smallest encodings: a kv is 8 (key length) + 1 (key) + 4 (type) + 1 (u8);
  // a tensor info is 8 + 1 (name) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
  if (n_kv > kMaxKeys)
    return Status::bad_file("metadata key count %llu is above the cap of %llu", static_cast<ull>(n_kv),
                            static_cast<ull>(kMaxKeys));
  if (n_tensors > kMaxTensors)
    return Status::bad_file("tensor count %llu is above the cap of %llu", static_cast<ull>(n_tensors),
                            static_cast<ull>(kMaxTensors));
  const uint64_t min_bytes = n_kv * 14 + n_tensors * 33;  // both capped: cannot overflow
  if (min_bytes > c.left())
    return Status::bad_file("truncated at offset %llu: %llu keys and %llu tensors need at least %llu bytes, %llu left",
                            static_cast<ull>(c.pos), static_cast<ull>(n_kv), static_cast<ull>(n_tensors),
                            static_cast<ull>(min_bytes), static_cast<ull>(c.left()));
  return {};
}

Status File::Impl::parse_kv(Cursor& c, uint64_t i) {
  const uint64_t at = c.pos;
  KESTREL_TRY_ASSIGN(std::string_view key, c.str("metadata key", kMaxKeyBytes));
  if (key.empty()) return Status::bad_file("metadata entry %llu at offset %llu has an empty key", static_cast<ull>(i),
                                           static_cast<ull>(at));
  const int kl = static_cast<int>(key.size());
  const uint64_t type_at = c.pos;
  KESTREL_TRY_ASSIGN(uint32_t raw_type, c.u32("value type"));
  KESTREL_TRY(check_value_type(raw_type, type_at, key));
  Kv kv;
  kv.key = key;
  kv.type = static_cast<ValueType>(raw_type);
  const uint64_t raw_begin = c.pos;
  Status s;
  if (kv.type == ValueType::array) {
    const uint64_t atype_at = c.pos;
    auto atype = c.u32("array element type");
    if (!atype.ok()) return std::move(atype).take_status();
    KESTREL_TRY(check_value_type(*atype, atype_at, key));
    kv.array_type = static_cast<ValueType>(*atype);
    if (kv.array_type == ValueType::array)
      return Status::bad_file("key '%.*s' at offset %llu is an array of arrays (nested arrays are not supported)", kl,
                              key.data(), static_cast<ull>(at));
    auto count = c.u64("array length");
    if (!count.ok()) return std::move(count).take_status();
    if (*count > kMaxArrayLength)
      return Status::bad_file("key '%.*s' at offset %llu: array length %llu is above the cap of %llu", kl, key.data(),
                              static_cast<ull>(at), static_cast<ull>(*count), static_cast<ull>(kMaxArrayLength));
    kv.count = *count;
    kv.value = base + c.pos;
    s = skip_values(c, kv.array_type, kv.count, "array element");
  } else {
    kv.value = base + c.pos;
    s = skip_values(c, kv.type, 1, "value");
  }
  if (!s.ok()) return s.with_context("key '" + std::string(key) + "': ");
  kv.raw = std::string_view(reinterpret_cast<const char*>(base + raw_begin), static_cast<size_t>(c.pos - raw_begin));
  if (!kv_index.emplace(key, kvs.size()).second)
    return Status::bad_file("duplicate metadata key '%.*s' at offset %llu", kl, key.data(), static_cast<ull>(at));
  kvs.push_back(kv);
  return {};
}

Status File::Impl::parse_tensor_info(Cursor& c, uint64_t i, std::unordered_set<std::string_view>& names) {
  const uint64_t at = c.pos;
  KESTREL_TRY_ASSIGN(std::string_view name, c.str("tensor name", kMaxTensorNameBytes));
  if (name.empty())
    return Status::bad_file("tensor %llu at offset %llu has an empty name", static_cast<ull>(i), static_cast<ull>(at));
  const int nl = static_cast<int>(name.size());
  if (!names.insert(name).second)
    return Status::bad_file("duplicate tensor name '%.*s' at offset %llu", nl, name.data(), static_cast<ull>(at));
  KESTREL_TRY_ASSIGN(uint32_t n_dims, c.u32("tensor n_dims"));
  if (n_dims == 0 || n_dims > static_cast<uint32_t>(kMaxDims))
    return Status::bad_file("tensor '%.*s' has %u dims (1 to %d supported)", nl, name.data(), n_dims, kMaxDims);
  TensorInfo t;
  t.name = std::string(name);
  t.n_dims = static_cast<int>(n_dims);
  uint64_t n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    KESTREL_TRY_ASSIGN(uint64_t ne, c.u64("tensor dim"));
    if (ne == 0) return Status::bad_file("tensor '%.*s' has dim %u equal to 0", nl, name.data(), d);
    if (ne > static_cast<uint64_t>(INT64_MAX))
      return Status::bad_file("tensor '%.*s' has dim %u = %llu (negative as int64)", nl, name.data(), d,
                              static_cast<ull>(ne));
    if (!checked_mul(n_elements, ne, n_elements))
      return Status::bad_file("tensor '%.*s': element count overflows at dim %u", nl, name.data(), d);
    t.ne[d] = static_cast<int64_t>(ne);
  }
  KESTREL_TRY_ASSIGN(uint32_t type_id, c.u32("tensor type"));
  const DTypeTraits* tr = dtype_traits_from_id(type_id);
  if (!tr) {
    if (const char* known = ggml_type_name_or_null(type_id))
      return Status::unsupported("tensor '%.*s' has type %u (%s), which kestrel does not support", nl, name.data(),
                                 type_id, known);
    return Status::bad_file("tensor '%.*s' has unknown type id %u", nl, name.data(), type_id);
  }
  if (type_id == static_cast<uint32_t>(DType::Q8_K))
    return Status::unsupported("tensor '%.*s' has type q8_K, an activation-only type, not a storage type", nl,
                               name.data());
  t.type = static_cast<DType>(type_id);
  if (t.ne[0] % tr->block_size != 0)
    return Status::bad_file("tensor '%.*s': dim 0 (%lld) is not a multiple of the %s block size %d", nl, name.data(),
                            static_cast<long long>(t.ne[0]), tr->name, tr->block_size);
  uint64_t row_bytes = 0, nbytes = 0;
  if (!checked_mul(static_cast<uint64_t>(t.ne[0]) / tr->block_size, tr->type_size, row_bytes) ||
      !checked_mul(row_bytes, n_elements / static_cast<uint64_t>(t.ne[0]), nbytes))
    return Status::bad_file("tensor '%.*s': byte size overflows", nl, name.data());
  t.nbytes = nbytes;
  KESTREL_TRY_ASSIGN(t.offset, c.u64("tensor offset"));  // relative for now, see check_layout
  tensors.push_back(std::move(t));
  return {};
}

Status File::Impl::check_layout(const OpenOptions& options) {
  const int64_t nt = static_cast<int64_t>(tensors.size());
  // Overlap first (the dangerous case), on the offsets sorted; then order and holes.
  std::vector<uint32_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return tensors[a].offset < tensors[b].offset; });
  for (size_t k = 0; k + 1 < order.size(); ++k) {
    const TensorInfo& a = tensors[order[k]];
    const TensorInfo& b = tensors[order[k + 1]];
    uint64_t a_end = 0;
    if (!checked_add(a.offset, a.nbytes, a_end))
      return Status::bad_file("tensor '%s': offset %llu + size %llu overflows", a.name.c_str(),
                              static_cast<ull>(a.offset), static_cast<ull>(a.nbytes));
    if (b.offset < a_end)
      return Status::bad_file("tensor '%s' (data offset %llu) overlaps tensor '%s' (data offset %llu, %llu bytes)",
                              b.name.c_str(), static_cast<ull>(b.offset), a.name.c_str(), static_cast<ull>(a.offset),
                              static_cast<ull>(a.nbytes));
  }
  for (size_t k = 0; k < order.size(); ++k) {
    // Offsets are distinct here (equal ones would overlap), so the sorted
    // order is unique: it must be the info order.
    if (order[k] != k)
      return Status::bad_file("tensor data is out of order: tensor '%s' (info %zu) is stored at data offset %llu, "
                              "before tensor '%s' (info %zu)",
                              tensors[order[k]].name.c_str(), static_cast<size_t>(order[k]),
                              static_cast<ull>(tensors[order[k]].offset), tensors[k].name.c_str(), k);
  }
  uint64_t expected = 0;  // where the next tensor must start, relative to the data section
  for (int64_t i = 0; i < nt; ++i) {
    TensorInfo& t = tensors[static_cast<size_t>(i)];
    if (t.offset % alignment != 0)
      return Status::bad_file("tensor '%s': data offset %llu is not a multiple of the alignment %u", t.name.c_str(),
                              static_cast<ull>(t.offset), alignment);
    uint64_t end = 0, next = 0;
    if (!checked_add(t.offset, t.nbytes, end) || !checked_align_up(end, alignment, next))
      return Status::bad_file("tensor '%s': data offset %llu + size %llu overflows", t.name.c_str(),
                              static_cast<ull>(t.offset), static_cast<ull>(t.nbytes));
    if (t.offset > expected)
      return Status::bad_file("tensor '%s': data offset %llu leaves a hole of %llu bytes after the previous tensor",
                              t.name.c_str(), static_cast<ull>(t.offset), static_cast<ull>(t.offset - expected));
    expected = next;
    uint64_t abs_begin = 0, abs_end = 0;
    if (!checked_add(data_offset, t.offset, abs_begin) || !checked_add(abs_begin, t.nbytes, abs_end))
      return Status::bad_file("tensor '%s': file offset overflows", t.name.c_str());
    t.offset = abs_begin;
    if (abs_end > size) {
      if (options.vocab_only) continue;  // data may be absent; t.data stays null
      return Status::bad_file("truncated: tensor '%s' data [%llu, %llu) runs past the end of the file (%llu bytes)",
                              t.name.c_str(), static_cast<ull>(abs_begin), static_cast<ull>(abs_end),
                              static_cast<ull>(size));
    }
    t.data = base + abs_begin;
  }
  return {};
}

Status File::Impl::parse(const OpenOptions& options) {
  if (options.max_file_bytes != 0 && size > options.max_file_bytes)
    return Status::too_long("file is %llu bytes, above the cap of %llu", static_cast<ull>(size),
                            static_cast<ull>(options.max_file_bytes));
  Cursor c{base, size};
  uint64_t n_tensors = 0, n_kv = 0;
  KESTREL_TRY(parse_header(c, n_tensors, n_kv));

  kvs.reserve(static_cast<size_t>(n_kv));
  kv_index.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) KESTREL_TRY(parse_kv(c, i));

  if (auto it = kv_index.find("general.alignment"); it != kv_index.end()) {
    const Kv& kv = kvs[it->second];
    if (!is_integer(kv.type)) return type_error(kv.key, kv, "an integer");
    const AnyInt v = load_int(kv.type, kv.value);
    if (v.negative || v.magnitude == 0)
      return Status::bad_file("general.alignment is %lld: must be a power of two from 1 to %u",
                              static_cast<long long>(v.as_signed()), kMaxAlignment);
    if (!is_pow2(v.magnitude))
      return Status::bad_file("general.alignment %llu is not a power of two", static_cast<ull>(v.magnitude));
    if (v.magnitude > kMaxAlignment)
      return Status::bad_file("general.alignment %llu is above the cap of %u", static_cast<ull>(v.magnitude),
                              kMaxAlignment);
    alignment = static_cast<uint32_t>(v.magnitude);
  }

  tensors.reserve(static_cast<size_t>(n_tensors));
  {
    std::unordered_set<std::string_view> names;  // views into the file bytes
    names.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) KESTREL_TRY(parse_tensor_info(c, i, names));
  }
  // The data section starts at the next multiple of the alignment; with no
  // tensors it may lie past the end of the file (vocabulary-only files).
  if (!checked_align_up(c.pos, alignment, data_offset))
    return Status::bad_file("data section offset overflows");
  KESTREL_TRY(check_layout(options));

  tensor_index.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) tensor_index.emplace(tensors[i].name, i);
  return {};
}

Expected<const Kv*> File::Impl::find(std::string_view key) const {
  auto it = kv_index.find(key);
  if (it == kv_index.end())
    return Status::bad_file("key '%.*s' not found", static_cast<int>(key.size()), key.data());
  return &kvs[it->second];
}

// ---- File ----

File::File(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
File::~File() = default;

Expected<std::unique_ptr<File>> File::open(const std::string& path, const OpenOptions& options) {
  MapOptions mo;
  mo.use_mmap = options.use_mmap;
  mo.max_bytes = options.max_file_bytes;
  KESTREL_TRY_ASSIGN(auto mapped, MappedFile::open(path, mo));
  std::unique_ptr<Impl> impl(new (std::nothrow) Impl());
  if (!impl) return Status::out_of_memory("gguf::File");
  impl->base = mapped->data();
  impl->size = mapped->size();
  impl->mapped = std::move(mapped);
  Status s = impl->parse(options);
  if (!s.ok()) return s.with_context("'" + path + "': ");
  std::unique_ptr<File> f(new (std::nothrow) File(std::move(impl)));
  if (!f) return Status::out_of_memory("gguf::File");
  return f;
}

Expected<std::unique_ptr<File>> File::from_memory(const void* data, size_t size, const OpenOptions& options) {
  if (data == nullptr || size == 0) return Status::bad_file("empty buffer (0 bytes)");
  std::unique_ptr<Impl> impl(new (std::nothrow) Impl());
  if (!impl) return Status::out_of_memory("gguf::File");
  impl->base = static_cast<const uint8_t*>(data);
  impl->size = size;
  KESTREL_TRY(impl->parse(options));
  std::unique_ptr<File> f(new (std::nothrow) File(std::move(impl)));
  if (!f) return Status::out_of_memory("gguf::File");
  return f;
}

uint32_t File::version() const { return impl_->version; }
uint32_t File::alignment() const { return impl_->alignment; }
uint64_t File::file_size() const { return impl_->size; }
uint64_t File::data_offset() const { return impl_->data_offset; }
size_t File::n_keys() const { return impl_->kvs.size(); }

KeyInfo File::key_info(size_t i) const {
  const Kv& kv = impl_->kvs[i];
  return KeyInfo{kv.key, kv.type, kv.array_type, kv.count};
}

std::string_view File::raw_value(size_t i) const { return impl_->kvs[i].raw; }

bool File::has(std::string_view key) const { return impl_->kv_index.count(key) != 0; }

Expected<std::string_view> File::get_string(std::string_view key) const {
  KESTREL_TRY_ASSIGN(const Kv* kv, impl_->find(key));
  if (kv->type != ValueType::string) return type_error(key, *kv, "string");
  const uint64_t n = load_le<uint64_t>(kv->value);
  return std::string_view(reinterpret_cast<const char*>(kv->value + 8), static_cast<size_t>(n));
}

namespace {
Expected<AnyInt> get_int(const File::Impl& impl, std::string_view key, const Kv** out_kv) {
  auto it = impl.kv_index.find(key);
  if (it == impl.kv_index.end())
    return Status::bad_file("key '%.*s' not found", static_cast<int>(key.size()), key.data());
  const Kv& kv = impl.kvs[it->second];
  *out_kv = &kv;
  if (!is_integer(kv.type)) return type_error(key, kv, "an integer");
  return load_int(kv.type, kv.value);
}

Status range_error(std::string_view key, const AnyInt& v, const char* target) {
  if (v.negative)
    return Status::bad_file("key '%.*s' = %lld does not fit %s", static_cast<int>(key.size()), key.data(),
                            static_cast<long long>(v.as_signed()), target);
  return Status::bad_file("key '%.*s' = %llu does not fit %s", static_cast<int>(key.size()), key.data(),
                          static_cast<ull>(v.magnitude), target);
}
}  // namespace

Expected<uint32_t> File::get_u32(std::string_view key) const {
  const Kv* kv = nullptr;
  KESTREL_TRY_ASSIGN(AnyInt v, get_int(*impl_, key, &kv));
  if (v.negative || v.magnitude > UINT32_MAX) return range_error(key, v, "u32");
  return static_cast<uint32_t>(v.magnitude);
}

Expected<uint64_t> File::get_u64(std::string_view key) const {
  const Kv* kv = nullptr;
  KESTREL_TRY_ASSIGN(AnyInt v, get_int(*impl_, key, &kv));
  if (v.negative) return range_error(key, v, "u64");
  return v.magnitude;
}

Expected<int32_t> File::get_i32(std::string_view key) const {
  const Kv* kv = nullptr;
  KESTREL_TRY_ASSIGN(AnyInt v, get_int(*impl_, key, &kv));
  // llama.cpp's converters store token ids as u32 and write "none" (-1) as
  // 0xFFFFFFFF; read exactly that value back as -1.
  if (kv->type == ValueType::u32 && v.magnitude == 0xFFFFFFFFu) return -1;
  if (!fits_i32(v)) return range_error(key, v, "i32");
  return static_cast<int32_t>(v.as_signed());
}

Expected<float> File::get_f32(std::string_view key) const {
  KESTREL_TRY_ASSIGN(const Kv* kv, impl_->find(key));
  if (kv->type == ValueType::f32) return load_le<float>(kv->value);
  if (kv->type == ValueType::f64) return static_cast<float>(load_le<double>(kv->value));
  return type_error(key, *kv, "f32");
}

Expected<bool> File::get_bool(std::string_view key) const {
  KESTREL_TRY_ASSIGN(const Kv* kv, impl_->find(key));
  if (kv->type != ValueType::boolean) return type_error(key, *kv, "bool");
  return kv->value[0] != 0;
}

Expected<std::vector<std::string_view>> File::get_string_array(std::string_view key) const {
  KESTREL_TRY_ASSIGN(const Kv* kv, impl_->find(key));
  if (kv->type != ValueType::array || kv->array_type != ValueType::string)
    return type_error(key, *kv, "an array of strings");
  std::vector<std::string_view> out;
  out.reserve(static_cast<size_t>(kv->count));  // bounded by the file size at parse time
  const uint8_t* p = kv->value;
  for (uint64_t i = 0; i < kv->count; ++i) {
    const uint64_t n = load_le<uint64_t>(p);  // validated by parse_kv
    out.emplace_back(reinterpret_cast<const char*>(p + 8), static_cast<size_t>(n));
    p += 8 + n;
  }
  return out;
}

Expected<std::vector<float>> File::get_f32_array(std::string_view key) const {
  KESTREL_TRY_ASSIGN(const Kv* kv, impl_->find(key));
  if (kv->type != ValueType::array || (kv->array_type != ValueType::f32 && kv->array_type != ValueType::f64))
    return type_error(key, *kv, "an array of f32");
  std::vector<float> out(static_cast<size_t>(kv->count));
  const uint64_t w = fixed_width(kv->array_type);
  for (uint64_t i = 0; i < kv->count; ++i) {
    const uint8_t* p = kv->value + i * w;
    out[i] = kv->array_type == ValueType::f32 ? load_le<float>(p) : static_cast<float>(load_le<double>(p));
  }
  return out;
}

Expected<std::vector<int32_t>> File::get_i32_array(std::string_view key) const {
  KESTREL_TRY_ASSIGN(const Kv* kv, impl_->find(key));
  if (kv->type != ValueType::array || !is_integer(kv->array_type))
    return type_error(key, *kv, "an array of integers");
  std::vector<int32_t> out(static_cast<size_t>(kv->count));
  const uint64_t w = fixed_width(kv->array_type);
  for (uint64_t i = 0; i < kv->count; ++i) {
    const AnyInt v = load_int(kv->array_type, kv->value + i * w);
    if (!fits_i32(v))
      return Status::bad_file("key '%.*s': element %llu = %s%llu does not fit i32", static_cast<int>(key.size()),
                              key.data(), static_cast<ull>(i), v.negative ? "-" : "", static_cast<ull>(v.magnitude));
    out[i] = static_cast<int32_t>(v.as_signed());
  }
  return out;
}

Expected<uint64_t> File::get_array_size(std::string_view key) const {
  KESTREL_TRY_ASSIGN(const Kv* kv, impl_->find(key));
  if (kv->type != ValueType::array) return type_error(key, *kv, "an array");
  return kv->count;
}

const std::vector<TensorInfo>& File::tensors() const { return impl_->tensors; }

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

}  // namespace kestrel::gguf
