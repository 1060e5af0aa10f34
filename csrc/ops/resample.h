// Bilinear resampling of NCHW planes for feature visualization's random
// transforms (Olah et al., "Feature Visualization", Distill 2017): a resize with
// half-pixel centres and a rotation about the centre, each with its exact adjoint
// (the transpose of the linear map), so gradients reach the image exactly.
#pragma once

#include "common.h"

namespace gradvis {

// x is (planes, H, W), out is (planes, OH, OW). Output pixel (i, j) reads the
// input at s = (i + 0.5) * H / OH - 0.5 (and likewise along W), clamped to
// [0, H - 1], from its two neighbours floor(s) and min(floor(s) + 1, H - 1)
// (torch's interpolate(mode='bilinear', align_corners=False) for enlargements).
template <class T>
void resize_bilinear_forward_cpu(T* out, const T* x, index_t planes, index_t H, index_t W, index_t OH, index_t OW);

// The transpose: dy is (planes, OH, OW), dx is (planes, H, W) (written whole).
template <class T>
void resize_bilinear_adjoint_cpu(T* dx, const T* dy, index_t planes, index_t H, index_t W, index_t OH, index_t OW);

// x and out are (planes, H, W). The output shows the input rotated by `degrees`
// counter-clockwise (as displayed, the y axis pointing down) about the centre
// ((H - 1) / 2, (W - 1) / 2): pixel (i, j) reads the input bilinearly at
// R(-degrees) (i - cy, j - cx) + (cy, cx); taps outside the image count as zero.
template <class T>
void rotate_bilinear_forward_cpu(T* out, const T* x, index_t planes, index_t H, index_t W, double degrees);

// The transpose: dy and dx are (planes, H, W) (dx written whole).
template <class T>
void rotate_bilinear_adjoint_cpu(T* dx, const T* dy, index_t planes, index_t H, index_t W, double degrees);

}  // namespace gradvis
