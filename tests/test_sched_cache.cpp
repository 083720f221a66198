// The matmul calibration cache (runtime/sched/calib_cache.h): a round trip keeps every
// field; a file that is truncated, corrupt (one byte changed, any field out of range or
// naming a variant this build lacks, even under a recomputed checksum) or stale (another
// machine, build or model key) is refused with a reason, and load_or_calibrate measures
// again and rewrites it instead of trusting it.
#include <catch2/catch.hpp>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "platform/log.h"
#include "runtime/model/model.h"
#include "runtime/sched/calib_cache.h"
#include "runtime/sched/calibration.h"
#include "spec_test_util.h"

using namespace kestrel;

namespace {

std::string temp_dir(const char* name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("kestrel_test_sched_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(p);
  return p.string();
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

// The checksum line the writer appends, recomputed over a changed body.
std::string with_checksum(const std::string& body) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : body) h = (h ^ c) * 1099511628211ull;
  char end[40];
  std::snprintf(end, sizeof end, "end %016" PRIx64 "\n", h);
  return body + end;
}

std::string body_of(const std::string& text) { return text.substr(0, text.rfind("end ")); }

// A table over this machine's Q4_K candidates with made-up times.
std::vector<ShapeCosts> some_tables() {
  ShapeCosts c;
  c.shape = {DType::Q4_K, 256, 512};
  c.cands = matmul_candidates(CpuIsa::auto_detect, DType::Q4_K, 2);
  c.rows = {1, 2, 4, 8};
  for (size_t i = 0; i < c.cands.size() * c.rows.size(); ++i) c.ns.push_back(1000.5 + 37.25 * static_cast<double>(i));
  ShapeCosts f;
  f.shape = {DType::F16, 256, 320};
  f.cands = matmul_candidates(CpuIsa::auto_detect, DType::F16, 2);
  f.rows = {1, 3};
  for (size_t i = 0; i < f.cands.size() * f.rows.size(); ++i) f.ns.push_back(5e6 / static_cast<double>(i + 1));
  return {c, f};
}

CalibKey some_key() {
  return CalibKey{"test cpu | avx2 | 2 cpus", "kestrel test build", "isa avx2 threads 2 shapes q4_K:256x512"};
}

}  // namespace

TEST_CASE("a calibration file round-trips every field", "[sched][cache]") {
  const auto tables = some_tables();
  if (tables[0].cands.empty() || tables[1].cands.empty()) {
    WARN("SKIP: no cpu matmul kernels for Q4_K / F16 here");
    return;
  }
  const std::string dir = temp_dir("roundtrip");
  const CalibKey key = some_key();
  const std::string path = calib_path(dir, key);
  REQUIRE(write_calibration(path, key, tables).to_string() == "ok");
  auto back = read_calibration(path, key);
  REQUIRE(back.status().to_string() == "ok");
  REQUIRE(back.value().size() == tables.size());
  for (size_t s = 0; s < tables.size(); ++s) {
    const ShapeCosts &a = tables[s], &b = back.value()[s];
    CHECK(a.shape == b.shape);
    CHECK(a.cands == b.cands);
    CHECK(a.rows == b.rows);
    REQUIRE(a.ns.size() == b.ns.size());
    for (size_t i = 0; i < a.ns.size(); ++i) CHECK(b.ns[i] == Approx(a.ns[i]).epsilon(1e-5));
  }
  // The file name depends on the key; no temporary file is left behind.
  CHECK(calib_path(dir, key) != calib_path(dir, CalibKey{key.machine, key.build + "x", key.model}));
  size_t n_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) n_files += e.is_regular_file() ? 1 : 0;
  CHECK(n_files == 1);
  std::filesystem::remove_all(dir);
}

TEST_CASE("truncated, corrupt and stale calibration files are refused", "[sched][cache]") {
  const auto tables = some_tables();
  if (tables[0].cands.empty()) {
    WARN("SKIP: no cpu matmul kernels for Q4_K here");
    return;
  }
  const std::string dir = temp_dir("bad");
  const CalibKey key = some_key();
  const std::string path = calib_path(dir, key);
  REQUIRE(write_calibration(path, key, tables).to_string() == "ok");
  const std::string good = slurp(path);
  auto refused = [&](const std::string& text, StatusCode code) {
    spit(path, text);
    auto r = read_calibration(path, key);
    INFO(r.status().to_string());
    CHECK_FALSE(r.ok());
    CHECK(r.status().code() == code);
  };
  // Truncated anywhere: at every length from empty to one byte short.
  for (size_t n = 0; n < good.size(); n += (n < 200 ? 1 : 7)) refused(good.substr(0, n), StatusCode::bad_file);
  refused(good.substr(0, good.size() - 1), StatusCode::bad_file);
  // One byte changed, anywhere before the checksum line.
  for (size_t i = 0; i < good.size() - 24; i += 5) {
    std::string t = good;
    t[i] = static_cast<char>(t[i] ^ 0x04);
    refused(t, StatusCode::bad_file);
  }
  // Fields out of range under a valid checksum.
  const std::string body = body_of(good);
  auto edited = [&](const std::string& from, const std::string& to) {
    std::string b = body;
    const size_t at = b.find(from);
    REQUIRE(at != std::string::npos);
    b.replace(at, from.size(), to);
    return with_checksum(b);
  };
  refused(edited("shapes 2", "shapes 3"), StatusCode::bad_file);          // a shape missing
  refused(edited("shapes 2", "shapes 99999999999"), StatusCode::bad_file);
  refused(edited("shapes 2", "shapes -1"), StatusCode::bad_file);
  refused(edited("ns 1000.5", "ns -1000.5"), StatusCode::bad_file);
  refused(edited("ns 1000.5", "ns nan"), StatusCode::bad_file);
  refused(edited("ns 1000.5", "ns inf"), StatusCode::bad_file);
  refused(edited("ns 1000.5", "ns 0"), StatusCode::bad_file);
  refused(edited("ns 1000.5", "ns 1000.5x"), StatusCode::bad_file);
  refused(edited("rows 1 2 4 8", "rows 1 2 2 8"), StatusCode::bad_file);
  refused(edited("rows 1 2 4 8", "rows 1 2 4"), StatusCode::bad_file);
  refused(edited("rows 1 2 4 8", "rows 1 2 4 99999999"), StatusCode::bad_file);
  refused(edited("shape q4_K 256", "shape q4_K 100"), StatusCode::bad_file);  // not a multiple of 256
  refused(edited("shape q4_K 256", "shape zz 256"), StatusCode::bad_file);
  refused(edited(std::string("cand ") + tables[0].cands[0].variant->name, "cand q4_K_matmul__nope_dot9x9"),
          StatusCode::bad_file);
  refused(edited(std::string("cand ") + tables[0].cands[0].variant->name + " 1\n", "cand policy 0\n"),
          StatusCode::bad_file);
  refused(edited("kestrel-calibration 2", "kestrel-calibration 1"), StatusCode::bad_file);
  refused(with_checksum(body + "ns 1\n"), StatusCode::bad_file);  // trailing line
  // Stale: another machine, build or model under a valid checksum.
  refused(edited("machine test cpu", "machine other cpu"), StatusCode::invalid_argument);
  refused(edited("build kestrel test build", "build kestrel other build"), StatusCode::invalid_argument);
  refused(edited("model isa avx2", "model isa sse4.2"), StatusCode::invalid_argument);
  // Missing, or a directory.
  std::filesystem::remove(path);
  CHECK(read_calibration(path, key).status().code() == StatusCode::io_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("load_or_calibrate measures once, reads the cache after, and rebuilds a bad cache", "[sched][cache]") {
  const auto model = spectest::synth(ArchId::llama, 1, 2, "q4_k_m", 256);
  const Model& m = *model;
  auto cpu = backend_cpu().create(BackendOptions{.n_threads = 2});
  REQUIRE(cpu.status().to_string() == "ok");
  CalibrateOptions o;
  o.rows = {1, 2, 8};
  o.reps = 1;
  o.max_threads = 2;
  const std::string dir = temp_dir("load");
  Logger log;

  auto a = load_or_calibrate(m, **cpu, o, dir, false, log);
  REQUIRE(a.status().to_string() == "ok");
  CHECK_FALSE(a.value().from_cache);
  CHECK(a.value().why_measured.find("io_error") != std::string::npos);  // no file yet
  // The model's shapes: q, k/v, o, gate/up, down, output in q4_K / q6_K.
  CHECK(a.value().tables.size() == model_matmul_weights(m).size());
  const std::string path = a.value().path;
  REQUIRE(std::filesystem::exists(path));
  const std::string good = slurp(path);

  auto b = load_or_calibrate(m, **cpu, o, dir, false, log);
  REQUIRE(b.status().to_string() == "ok");
  CHECK(b.value().from_cache);
  CHECK(b.value().path == path);
  CHECK(format_calibration(CalibKey{}, b.value().tables) == format_calibration(CalibKey{}, a.value().tables));

  // Truncated, corrupt, stale: measured again and the file rewritten whole.
  const std::string stale = [&] {
    std::string body = body_of(good);
    const size_t at = body.find("build ");
    body.insert(at + 6, "old ");
    return with_checksum(body);
  }();
  for (const std::string& bad : {good.substr(0, good.size() / 2), std::string("garbage\n"), stale}) {
    spit(path, bad);
    auto c = load_or_calibrate(m, **cpu, o, dir, false, log);
    REQUIRE(c.status().to_string() == "ok");
    CHECK_FALSE(c.value().from_cache);
    auto d = load_or_calibrate(m, **cpu, o, dir, false, log);
    REQUIRE(d.status().to_string() == "ok");
    CHECK(d.value().from_cache);
  }
  // Other options (threads) are another key: another file.
  CalibrateOptions o1 = o;
  o1.max_threads = 1;
  auto e = load_or_calibrate(m, **cpu, o1, dir, false, log);
  REQUIRE(e.status().to_string() == "ok");
  CHECK_FALSE(e.value().from_cache);
  CHECK(e.value().path != path);
  for (const ShapeCosts& c : e.value().tables)
    for (const MatmulCandidate& k : c.cands) CHECK(k.n_threads == 1);
  // force measures even with a valid cache; no directory: measured, nothing written.
  auto f = load_or_calibrate(m, **cpu, o, dir, true, log);
  REQUIRE(f.status().to_string() == "ok");
  CHECK_FALSE(f.value().from_cache);
  auto g = load_or_calibrate(m, **cpu, o, "", false, log);
  REQUIRE(g.status().to_string() == "ok");
  CHECK_FALSE(g.value().from_cache);
  CHECK(g.value().path.empty());
  std::filesystem::remove_all(dir);
}
