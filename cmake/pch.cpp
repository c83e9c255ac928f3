// Translation unit that builds the shared precompiled header for <torch/torch.h>.
#include <torch/torch.h>
