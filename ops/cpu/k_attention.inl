// CPU kernels: attention family (see isa_body.inl for how this is compiled per ISA).
namespace kestrel::cpu::KESTREL_ISA_NS {

inline void register_attention(KernelTable& table) { (void)table; }

}  // namespace kestrel::cpu::KESTREL_ISA_NS
