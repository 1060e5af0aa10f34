// Separable Gaussian blur over H and W of NCHW planes, matching
// scipy.ndimage.gaussian_filter(x, (0, 0, s_h, s_w), mode='reflect', truncate=t),
// and its exact adjoint (the transpose of that linear map).
#pragma once

#include <vector>

#include "common.h"

namespace gradvis {

// scipy's _gaussian_kernel1d: radius = int(truncate*sigma + 0.5), weights
// exp(-0.5 x^2 / sigma^2) normalized to sum 1. sigma <= 1e-15 gives {1}
// (scipy skips such axes).
std::vector<double> gaussian_kernel1d(double sigma, double truncate);

// x and out are (planes, H, W); wh and ww are odd-length symmetric weights
// (length 1 = identity on that axis). adjoint = apply the transpose.
template <class T>
void gaussian_blur_cpu(T* out, const T* x, index_t planes, index_t H, index_t W, const std::vector<double>& wh,
                       const std::vector<double>& ww, bool adjoint);

}  // namespace gradvis
