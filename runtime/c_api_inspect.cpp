// The C API's view of a model file: metadata entries as text and the tensor
// table (what `kestrel inspect` prints).
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include "runtime/c_api_internal.h"
#include "runtime/model/gguf.h"

using namespace kestrel;
using namespace kestrel::capi;

namespace {

constexpr size_t kArrayPreview = 8;

void append_scalar(const gguf::File& f, std::string_view key, gguf::ValueType t, std::string& out) {
  using VT = gguf::ValueType;
  char tmp[64];
  switch (t) {
    case VT::string: {
      auto v = f.get_string(key);
      if (v.ok()) out.append(v->data(), v->size());
      return;
    }
    case VT::boolean: {
      auto v = f.get_bool(key);
      out += v.ok() ? (*v ? "true" : "false") : "?";
      return;
    }
    case VT::f32:
    case VT::f64: {
      auto v = f.get_f32(key);
      if (v.ok()) std::snprintf(tmp, sizeof tmp, "%g", static_cast<double>(*v));
      out += v.ok() ? tmp : "?";
      return;
    }
    default: {  // integers: unsigned when they fit, else signed 32-bit
      auto u = f.get_u64(key);
      if (u.ok()) {
        std::snprintf(tmp, sizeof tmp, "%" PRIu64, *u);
        out += tmp;
        return;
      }
      auto i = f.get_i32(key);
      if (i.ok()) {
        std::snprintf(tmp, sizeof tmp, "%" PRId32, *i);
        out += tmp;
        return;
      }
      out += "?";
      return;
    }
  }
}

void append_array(const gguf::File& f, std::string_view key, const gguf::KeyInfo& ki, std::string& out) {
  using VT = gguf::ValueType;
  char tmp[64];
  std::snprintf(tmp, sizeof tmp, "[%" PRIu64 " x %s", ki.count, gguf::value_type_name(ki.array_type));
  out += tmp;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(ki.count, kArrayPreview));
  if (n == 0) {
    out += "]";
    return;
  }
  out += ": ";
  bool shown = false;
  if (ki.array_type == VT::string) {
    auto v = f.get_string_array(key);
    if (v.ok()) {
      for (size_t i = 0; i < n; ++i) {
        if (i) out += ", ";
        out += "'";
        out.append((*v)[i].data(), (*v)[i].size());
        out += "'";
      }
      shown = true;
    }
  } else if (ki.array_type == VT::f32 || ki.array_type == VT::f64) {
    auto v = f.get_f32_array(key);
    if (v.ok()) {
      for (size_t i = 0; i < n; ++i) {
        std::snprintf(tmp, sizeof tmp, "%s%g", i ? ", " : "", static_cast<double>((*v)[i]));
        out += tmp;
      }
      shown = true;
    }
  } else {
    auto v = f.get_i32_array(key);
    if (v.ok()) {
      for (size_t i = 0; i < n; ++i) {
        std::snprintf(tmp, sizeof tmp, "%s%" PRId32, i ? ", " : "", (*v)[i]);
        out += tmp;
      }
      shown = true;
    }
  }
  if (!shown) out += "...";
  else if (ki.count > n) out += ", ...";
  out += "]";
}

std::string value_text(const gguf::File& f, size_t i) {
  const gguf::KeyInfo ki = f.key_info(i);
  std::string out;
  if (ki.type == gguf::ValueType::array) append_array(f, ki.key, ki, out);
  else append_scalar(f, ki.key, ki.type, out);
  return out;
}

template <typename Fn>
int32_t text_call(const kestrel_model* model, char* buf, size_t buf_size, Fn&& fn) {
  if (buf && buf_size) buf[0] = '\0';
  if (!live(model)) return -1;
  int32_t out = -1;
  const Status s = guarded([&]() -> Status {
    out = fn(model->model->file());
    return {};
  });
  if (!s.ok()) {
    fail_model(model, s);
    return -1;
  }
  return out;
}

}  // namespace

extern "C" {

int32_t kestrel_model_meta_count(const kestrel_model* model) {
  return live(model) ? static_cast<int32_t>(model->model->file().n_keys()) : -1;
}

int32_t kestrel_model_meta_key_by_index(const kestrel_model* model, int32_t i, char* buf, size_t buf_size) {
  return text_call(model, buf, buf_size, [&](const gguf::File& f) -> int32_t {
    if (i < 0 || static_cast<size_t>(i) >= f.n_keys()) return -1;
    return copy_out(std::string(f.key_info(static_cast<size_t>(i)).key), buf, buf_size);
  });
}

int32_t kestrel_model_meta_val_str_by_index(const kestrel_model* model, int32_t i, char* buf, size_t buf_size) {
  return text_call(model, buf, buf_size, [&](const gguf::File& f) -> int32_t {
    if (i < 0 || static_cast<size_t>(i) >= f.n_keys()) return -1;
    return copy_out(value_text(f, static_cast<size_t>(i)), buf, buf_size);
  });
}

int32_t kestrel_model_meta_val_str(const kestrel_model* model, const char* key, char* buf, size_t buf_size) {
  return text_call(model, buf, buf_size, [&](const gguf::File& f) -> int32_t {
    if (!key) return -1;
    const std::string_view k(key);
    for (size_t i = 0; i < f.n_keys(); ++i)
      if (f.key_info(i).key == k) return copy_out(value_text(f, i), buf, buf_size);
    return -1;
  });
}

int32_t kestrel_model_tensor_count(const kestrel_model* model) {
  return live(model) ? static_cast<int32_t>(model->model->file().tensors().size()) : -1;
}

kestrel_status kestrel_model_tensor_info(const kestrel_model* model, int32_t i, kestrel_tensor_info* out) {
  const Status s = guarded([&]() -> Status {
    if (!live(model)) return Status::invalid_argument("kestrel_model_tensor_info: model is NULL or not live");
    if (!out) return Status::invalid_argument("kestrel_model_tensor_info: out is NULL");
    const auto& ts = model->model->file().tensors();
    if (i < 0 || static_cast<size_t>(i) >= ts.size())
      return Status::invalid_argument("kestrel_model_tensor_info: tensor index %d outside [0, %zu)", i, ts.size());
    const gguf::TensorInfo& t = ts[static_cast<size_t>(i)];
    out->name = t.name.c_str();
    out->type_name = dtype_name(t.type);
    out->type = static_cast<int32_t>(t.type);
    out->n_dims = t.n_dims;
    for (int d = 0; d < 4; ++d) out->ne[d] = t.ne[d];
    out->n_bytes = t.nbytes;
    return {};
  });
  if (!s.ok()) return live(model) ? fail_model(model, s) : fail_global(s);
  clear_model_error(model);
  return KESTREL_OK;
}

}  // extern "C"
