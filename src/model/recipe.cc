// Default bodies of the optional BackendOps (recipe.h): a backend that does not implement them answers kUnsupported.
#include "model/recipe.h"

namespace citadel {

Status BackendOps::rmsnorm(Act, TensorRole, int) { return Unsupported("this backend has no in-place rmsnorm op"); }
Status BackendOps::mla_rope_kv_write(int) { return Unsupported("this backend has no multi-head latent attention"); }
Status BackendOps::mla_attention(int) { return Unsupported("this backend has no multi-head latent attention"); }
Status BackendOps::moe(int, Act, Act, bool) { return Unsupported("this backend has no mixture-of-experts op"); }

}  // namespace citadel
