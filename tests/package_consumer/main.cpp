// Prints "pp=1 dp=2 cp=1 tp=1, ZeRO-1, 4 blocks: valid" when built against cairn's package.
#include <cstdio>

#include "cairn/model/config.h"
#include "cairn/parallel/plan.h"

int main() {
  cairn::model::ModelConfig m;
  cairn::parallel::Plan plan = cairn::parallel::Plan::data_parallel(2, m.n_layer, 1);
  const cairn::Status s = plan.validate(m, 2);
  std::printf("%s: %s\n", plan.summary().c_str(), s.ok() ? "valid" : s.message().c_str());
  return s.ok() ? 0 : 1;
}
