// CPU kernels: norm family (see isa_body.inl for how this is compiled per ISA).
namespace kestrel::cpu::KESTREL_ISA_NS {

inline void register_norm(KernelTable& table) { (void)table; }

}  // namespace kestrel::cpu::KESTREL_ISA_NS
