// Intel AMX (Advanced Matrix Extensions): whether this process may use the tile unit.
//
// AMX needs three things: the CPU reports it (cpuid leaf 7: amx-tile, amx-int8,
// amx-bf16), the OS saves its state (XCR0 bits 17 and 18), and on Linux the process
// asks for the large tile-data state once (arch_prctl(ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA)); before that request the first tile instruction faults. A
// refused request (an old kernel, a seccomp filter, a sandbox) means "not available",
// never a crash: the caller runs its next-best kernel and can log `reason`.
//
//   const AmxState& amx = amx_state();      // probed and requested once per process
//   if (amx.int8_usable()) ... else log("no AMX: %s", amx.reason);
//
// The environment variable KESTREL_AMX=0 makes amx_state() report AMX as refused (to
// compare against the other kernels on an AMX machine). amx_probe(true) runs the same
// probe with the request treated as refused, for tests of the fallback path.
#pragma once

namespace kestrel {

struct AmxState {
  bool cpu_tile = false;  // cpuid.(7,0):edx[24] AMX-TILE
  bool cpu_int8 = false;  // cpuid.(7,0):edx[25] AMX-INT8
  bool cpu_bf16 = false;  // cpuid.(7,0):edx[22] AMX-BF16
  bool os_state = false;  // XCR0 enables XTILECFG and XTILEDATA
  bool permitted = false; // the tile-data permission was granted to this process
  // Why AMX is not usable ("" when it is): a static string.
  const char* reason = "";

  bool int8_usable() const { return cpu_tile && cpu_int8 && os_state && permitted; }
  bool bf16_usable() const { return cpu_tile && cpu_bf16 && os_state && permitted; }
};

// Probes the CPU and OS and requests the tile-data permission (granted once, it stays
// for the life of the process). simulate_refusal: skip the request and report it as
// refused. Thread-safe; not cached.
AmxState amx_probe(bool simulate_refusal = false);

// amx_probe() run once per process (honouring KESTREL_AMX=0); safe from any thread.
const AmxState& amx_state();

}  // namespace kestrel
