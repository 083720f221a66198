#include "runtime/sched/calib_cache.h"

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>

#include <sys/stat.h>
#include <unistd.h>

#include "platform/cpu_features.h"

#ifndef KESTREL_BUILD_ID_STRING
#define KESTREL_BUILD_ID_STRING "unknown build"
#endif

namespace kestrel {

namespace {

// The version changes with the file layout or the way times are measured: older files are stale.
constexpr const char* kMagic = "kestrel-calibration 2";
constexpr size_t kMaxFileBytes = size_t(4) << 20;

uint64_t fnv1a(const char* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
  return h;
}

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

void appendf(std::string& s, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void appendf(std::string& s, const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0) s.append(buf, static_cast<size_t>(std::min<int>(n, sizeof buf - 1)));
}

// A line split into space-separated words, with checked number parsing.
class Words {
 public:
  explicit Words(const std::string& line) {
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      const size_t j = line.find(' ', i);
      const size_t e = j == std::string::npos ? line.size() : j;
      if (e > i) w_.push_back(line.substr(i, e - i));
      i = e;
    }
  }
  size_t size() const { return w_.size(); }
  const std::string& operator[](size_t i) const { return w_[i]; }
  bool integer(size_t i, int64_t lo, int64_t hi, int64_t* out) const {
    if (i >= w_.size() || w_[i].empty()) return false;
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(w_[i].c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
    *out = v;
    return true;
  }
  bool positive(size_t i, double* out) const {
    if (i >= w_.size() || w_[i].empty()) return false;
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(w_[i].c_str(), &end);
    if (errno != 0 || *end != '\0' || !std::isfinite(v) || v <= 0) return false;
    *out = v;
    return true;
  }

 private:
  std::vector<std::string> w_;
};

bool dtype_from_name(const std::string& s, DType* out) {
  for (DType t : kWeightTypes) {
    if (s == dtype_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

// Parses the body (every line before "end"): the tables, or why not.
Expected<std::vector<ShapeCosts>> parse(const std::vector<std::string>& lines, const CalibKey& key) {
  size_t li = 0;
  auto next = [&]() -> const std::string* { return li < lines.size() ? &lines[li++] : nullptr; };
  auto bad = [&](const char* what) { return Status::bad_file("calibration line %zu: %s", li, what); };
  const std::string* l = next();
  if (!l || *l != kMagic) return bad("not a kestrel calibration file of this version");
  const std::pair<const char*, const std::string*> fields[] = {
      {"machine ", &key.machine}, {"build ", &key.build}, {"model ", &key.model}};
  for (const auto& [name, want] : fields) {
    l = next();
    if (!l || l->compare(0, std::strlen(name), name) != 0) return bad("key field missing");
    if (l->substr(std::strlen(name)) != *want)
      return Status::invalid_argument("calibration is stale: its %sdiffers from this one's", name);
  }
  l = next();
  int64_t n_shapes = 0;
  if (!l || Words(*l).size() != 2 || Words(*l)[0] != "shapes" || !Words(*l).integer(1, 0, kMaxCalibShapes, &n_shapes))
    return bad("shape count");
  std::vector<ShapeCosts> out;
  for (int64_t s = 0; s < n_shapes; ++s) {
    l = next();
    if (!l) return bad("truncated");
    const Words h(*l);
    ShapeCosts c;
    int64_t k = 0, n = 0, nc = 0, nr = 0;
    if (h.size() != 6 || h[0] != "shape" || !dtype_from_name(h[1], &c.shape.wtype) || !h.integer(2, 1, 1 << 24, &k) ||
        !h.integer(3, 1, 1 << 24, &n) || !h.integer(4, 1, kMaxCalibCands, &nc) || !h.integer(5, 1, kMaxCalibRows, &nr))
      return bad("shape header");
    if (k % dtype_block_size(c.shape.wtype) != 0) return bad("K is not a multiple of the weight type's block");
    c.shape.k = k;
    c.shape.n = n;
    for (int64_t i = 0; i < nc; ++i) {
      l = next();
      if (!l) return bad("truncated");
      const Words w(*l);
      int64_t t = 0;
      if (w.size() != 3 || w[0] != "cand" || !w.integer(2, 1, kMaxCalibThreads, &t)) return bad("candidate");
      MatmulCandidate mc{nullptr, static_cast<int>(t)};
      if (w[1] != "policy") {
        mc.variant = cpu_matmul_find_variant(w[1].c_str());
        if (!mc.variant) return bad("a matmul variant this build does not have");
        if (mc.variant->wtype != c.shape.wtype) return bad("a variant of another weight type");
        if (!mc.variant->available || !mc.variant->available()) return bad("a variant this machine cannot run");
      }
      c.cands.push_back(mc);
    }
    l = next();
    if (!l) return bad("truncated");
    const Words rw(*l);
    if (rw.size() != static_cast<size_t>(nr) + 1 || rw[0] != "rows") return bad("row counts");
    for (int64_t i = 0; i < nr; ++i) {
      int64_t m = 0;
      if (!rw.integer(static_cast<size_t>(i) + 1, 1, kMaxCalibM, &m) || (i > 0 && m <= c.rows.back()))
        return bad("row counts must increase within range");
      c.rows.push_back(m);
    }
    c.ns.resize(static_cast<size_t>(nc * nr));
    for (int64_t i = 0; i < nc; ++i) {
      l = next();
      if (!l) return bad("truncated");
      const Words tw(*l);
      if (tw.size() != static_cast<size_t>(nr) + 1 || tw[0] != "ns") return bad("times");
      for (int64_t r = 0; r < nr; ++r)
        if (!tw.positive(static_cast<size_t>(r) + 1, &c.ns[static_cast<size_t>(i * nr + r)]))
          return bad("a time that is not a positive finite number");
    }
    if (!cost_table_valid(c)) return bad("inconsistent table");
    out.push_back(std::move(c));
  }
  if (li != lines.size()) return bad("trailing lines");
  return out;
}

// The running program's file (size and modification time): kernels rebuilt
// under the same version, compiler and ISAs are another build, whose curves
// are measured again rather than trusted.
std::string program_identity() {
  struct stat st {};
  if (stat("/proc/self/exe", &st) != 0) return "program unknown";
  std::string s;
  appendf(s, "program %lld bytes at %lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
          (long)st.st_mtim.tv_nsec);
  return s;
}

}  // namespace

CalibKey calib_key(CpuIsa isa, const CalibrateOptions& o, const std::vector<ShapeWeights>& shapes) {
  CalibKey k;
  const CpuFeatures& f = cpu_features();
  k.machine = f.model.empty() ? "unknown cpu" : f.model;
  k.machine += " | ";
  k.machine += f.to_string();
  appendf(k.machine, " | %d cpus", f.n_logical_cpus);
  k.machine = one_line(k.machine);
  k.build = one_line(std::string(KESTREL_BUILD_ID_STRING) + " | " + program_identity());
  std::string m;
  appendf(m, "isa %s threads %d reps %d rows", cpu_isa_name(isa), o.max_threads, o.reps);
  for (int64_t r : o.rows) appendf(m, " %lld", (long long)r);
  m += " shapes";
  for (const ShapeWeights& s : shapes)
    appendf(m, " %s:%lldx%lld", dtype_name(s.shape.wtype), (long long)s.shape.k, (long long)s.shape.n);
  k.model = one_line(m);
  return k;
}

std::string calib_dir() {
  if (const char* d = std::getenv("KESTREL_CALIB_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/kestrel/calibration";
  if (const char* d = std::getenv("HOME"); d && *d) return std::string(d) + "/.cache/kestrel/calibration";
  return "";
}

std::string calib_path(const std::string& dir, const CalibKey& key) {
  const std::string all = key.machine + "\n" + key.build + "\n" + key.model;
  char name[40];
  std::snprintf(name, sizeof name, "matmul-%016" PRIx64 ".txt", fnv1a(all.data(), all.size()));
  return dir + "/" + name;
}

std::string format_calibration(const CalibKey& key, const std::vector<ShapeCosts>& tables) {
  std::string s = std::string(kMagic) + "\n";
  s += "machine " + key.machine + "\nbuild " + key.build + "\nmodel " + key.model + "\n";
  appendf(s, "shapes %zu\n", tables.size());
  for (const ShapeCosts& c : tables) {
    appendf(s, "shape %s %lld %lld %zu %zu\n", dtype_name(c.shape.wtype), (long long)c.shape.k, (long long)c.shape.n,
            c.cands.size(), c.rows.size());
    for (const MatmulCandidate& mc : c.cands)
      appendf(s, "cand %s %d\n", mc.variant ? mc.variant->name : "policy", mc.n_threads);
    s += "rows";
    for (int64_t r : c.rows) appendf(s, " %lld", (long long)r);
    s += "\n";
    for (size_t i = 0; i < c.cands.size(); ++i) {
      s += "ns";
      for (size_t r = 0; r < c.rows.size(); ++r) appendf(s, " %.6g", c.at(i, r));
      s += "\n";
    }
  }
  appendf(s, "end %016" PRIx64 "\n", fnv1a(s.data(), s.size()));
  return s;
}

Expected<std::vector<ShapeCosts>> read_calibration(const std::string& path, const CalibKey& key) {
  std::string text;
  try {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return Status::io_error("cannot open '%s': %s", path.c_str(), std::strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
      text.append(buf, n);
      if (text.size() > kMaxFileBytes) break;
    }
    std::fclose(f);
    if (text.size() > kMaxFileBytes)
      return Status::bad_file("'%s': larger than %zu bytes", path.c_str(), kMaxFileBytes);
    // The last line: "end <hash>\n" over every byte before it.
    if (text.empty() || text.back() != '\n') return Status::bad_file("'%s': truncated (no final line)", path.c_str());
    const size_t end_at = text.rfind('\n', text.size() - 2);
    const size_t body = end_at == std::string::npos ? 0 : end_at + 1;
    const std::string last = text.substr(body, text.size() - body - 1);
    char want[24];
    std::snprintf(want, sizeof want, "%016" PRIx64, fnv1a(text.data(), body));
    if (last != std::string("end ") + want)
      return Status::bad_file("'%s': truncated or corrupt (checksum)", path.c_str());
    std::vector<std::string> lines;
    for (size_t i = 0; i < body;) {
      const size_t j = text.find('\n', i);
      lines.push_back(text.substr(i, j - i));
      i = j + 1;
    }
    auto tables = parse(lines, key);
    if (!tables) {
      Status st = tables.status();
      return std::move(st.with_context("'" + path + "': "));
    }
    return tables;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("reading '%s'", path.c_str());
  }
}

Status write_calibration(const std::string& path, const CalibKey& key, const std::vector<ShapeCosts>& tables) {
  try {
    const std::string text = format_calibration(key, tables);
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    if (ec) return Status::io_error("cannot create '%s': %s", dir.c_str(), ec.message().c_str());
    const std::string tmp = path + ".tmp." + std::to_string(static_cast<long>(getpid()));
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) return Status::io_error("cannot create '%s': %s", tmp.c_str(), std::strerror(errno));
    const bool wrote = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    const bool closed = std::fclose(f) == 0;
    if (!wrote || !closed) {
      std::remove(tmp.c_str());
      return Status::io_error("cannot write '%s'", tmp.c_str());
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int e = errno;
      std::remove(tmp.c_str());
      return Status::io_error("cannot rename '%s' to '%s': %s", tmp.c_str(), path.c_str(), std::strerror(e));
    }
    return {};
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("calibration text");
  }
}

}  // namespace kestrel
