// Shared by every Kiln OpenCL C source (prepended by sources.rs).
//
// Two paths, chosen by the build options the host passes:
//   portable (default): OpenCL 1.2, fp32 math, fp16 only as storage through
//     vload_half / vstore_half; work-group reductions in local memory.
//   Intel-tuned (-DKILN_INTEL=1): cl_khr_fp16 native half loads and stores
//     (and half arithmetic in f16 element-wise kernels),
//     cl_intel_subgroups reductions and block reads, kernels pinned to
//     16-wide subgroups with intel_reqd_sub_group_size.
//
// Tensors arrive as a `__global uchar*` base plus a byte offset (views may
// start anywhere in a buffer, OpenCL 1.2 sub-buffers need alignment), and a
// dtype code; helpers below load and store elements as float.

#ifdef KILN_INTEL
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#pragma OPENCL EXTENSION cl_intel_subgroups : enable
#define SG_SIZE 16
#define REQD_SG __attribute__((intel_reqd_sub_group_size(SG_SIZE)))
#else
#define REQD_SG
#endif

// Activation / KV dtype codes (must match dtype_code in device.rs).
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_E4M3 3

// E4M3 (OCP FP8, no infinities, max 448) to float.
inline float e4m3_to_f32(uint b) {
    uint mag = b & 0x7fu;
    if (mag == 0x7fu) return NAN;
    uint ef = mag >> 3;
    float man = (float)(mag & 7u);
    float v = ef == 0 ? man * 0x1p-9f : (1.0f + man * 0.125f) * ldexp(1.0f, (int)ef - 7);
    return (b & 0x80u) ? -v : v;
}

// Float to E4M3, round to nearest even, saturating to ±448 (NaN stays NaN).
inline uchar f32_to_e4m3(float x) {
    uchar sign = signbit(x) ? 0x80 : 0;
    if (isnan(x)) return sign | 0x7f;
    float a = fabs(x);
    if (isinf(x) || a >= 448.0f) return sign | 0x7e;
    if (a == 0.0f) return sign;
    int e;
    (void)frexp(a, &e);
    int ex = max(e - 1, -6);
    float quantum = ldexp(1.0f, ex - 3);
    float q = rint(a / quantum) * quantum;
    if (q >= 448.0f) return sign | 0x7e;
    if (q == 0.0f) return sign;
    (void)frexp(q, &e);
    int qe = e - 1;
    if (qe < -6) return sign | (uchar)(q * 512.0f);
    int m = (int)(q * ldexp(1.0f, 3 - qe)) - 8;
    return sign | (uchar)(((qe + 7) << 3) | m);
}

inline float bf16_to_f32(ushort h) { return as_float(((uint)h) << 16); }

// Round to nearest even; NaN stays a quiet NaN.
inline ushort f32_to_bf16(float v) {
    uint u = as_uint(v);
    if (isnan(v)) return (ushort)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ushort)(u >> 16);
}

// Element i of a tensor of dtype dt, as float.
inline float ld(const __global uchar* p, size_t i, int dt) {
    if (dt == DT_F32) return ((const __global float*)p)[i];
#ifdef KILN_INTEL
    if (dt == DT_F16) return (float)((const __global half*)p)[i];
#else
    if (dt == DT_F16) return vload_half(i, (const __global half*)p);
#endif
    if (dt == DT_BF16) return bf16_to_f32(((const __global ushort*)p)[i]);
    return e4m3_to_f32(p[i]);
}

// Store v as element i of a tensor of dtype dt (round to nearest even).
inline void st(__global uchar* p, size_t i, int dt, float v) {
    if (dt == DT_F32) {
        ((__global float*)p)[i] = v;
    } else if (dt == DT_F16) {
#ifdef KILN_INTEL
        ((__global half*)p)[i] = convert_half_rte(v);
#else
        vstore_half_rte(v, i, (__global half*)p);
#endif
    } else if (dt == DT_BF16) {
        ((__global ushort*)p)[i] = f32_to_bf16(v);
    } else {
        p[i] = f32_to_e4m3(v);
    }
}

// Sum of v over the work-group (every work-item gets the result). `scratch`
// holds one float per work-item; the work-group size is a power of two.
inline float wg_sum(float v, __local float* scratch) {
    size_t lid = get_local_id(0), n = get_local_size(0);
#ifdef KILN_INTEL
    float s = sub_group_reduce_add(v);
    size_t sg = get_sub_group_id(), nsg = get_num_sub_groups();
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_sub_group_local_id() == 0) scratch[sg] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    float t = 0.0f;
    for (size_t i = 0; i < nsg; i++) t += scratch[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    (void)lid; (void)n;
    return t;
#else
    barrier(CLK_LOCAL_MEM_FENCE);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t s = n / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] += scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float t = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return t;
#endif
}

// Maximum of v over the work-group (NaN-propagating like the reference:
// fmax ignores NaN, so a NaN input still poisons the softmax through exp).
inline float wg_max(float v, __local float* scratch) {
    size_t lid = get_local_id(0), n = get_local_size(0);
#ifdef KILN_INTEL
    float s = sub_group_reduce_max(v);
    size_t sg = get_sub_group_id(), nsg = get_num_sub_groups();
    barrier(CLK_LOCAL_MEM_FENCE);
    if (get_sub_group_local_id() == 0) scratch[sg] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    float t = -INFINITY;
    for (size_t i = 0; i < nsg; i++) t = fmax(t, scratch[i]);
    barrier(CLK_LOCAL_MEM_FENCE);
    (void)lid; (void)n;
    return t;
#else
    barrier(CLK_LOCAL_MEM_FENCE);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (size_t s = n / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] = fmax(scratch[lid], scratch[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float t = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return t;
#endif
}
