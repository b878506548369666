// Default bodies of the optional BackendOps (recipe.h): a backend that does not implement them answers kUnsupported.
#include "model/recipe.h"

namespace citadel {

Status BackendOps::rmsnorm(Act, TensorRole, int) { return Unsupported("this backend has no in-place rmsnorm op"); }
Status BackendOps::mla_rope_kv_write(int) { return Unsupported("this backend has no multi-head latent attention"); }
Status BackendOps::mla_attention(int) { return Unsupported("this backend has no multi-head latent attention"); }
Status BackendOps::moe(int, Act, Act) { return Unsupported("this backend has no mixture-of-experts op"); }
Status BackendOps::scale(Act, float) { return Unsupported("this backend has no scale op"); }
Status BackendOps::qk_norm(int) { return Unsupported("this backend has no q/k norm op"); }
Status BackendOps::linear_gelu_mul(const Linear&, int, Act, Act) { return Unsupported("this backend has no GeGLU op"); }

}  // namespace citadel
