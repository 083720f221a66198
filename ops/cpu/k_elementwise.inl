// CPU kernels: elementwise family (see isa_body.inl for how this is compiled per ISA).
namespace kestrel::cpu::KESTREL_ISA_NS {

inline void register_elementwise(KernelTable& table) { (void)table; }

}  // namespace kestrel::cpu::KESTREL_ISA_NS
