// XLA FFI handlers running 2-D convolutions (forward, data gradient, weight gradient) on oneDNN.
//
// Built on first use by facegen_jax/models/onednn_conv.py (g++ against jaxlib's FFI headers and the
// onednn-devel-cpu-gomp headers) and registered as XLA:CPU custom calls. Layouts are JAX's:
// activations NHWC, weights HWIO, float32 or bfloat16 (the *Bf16 handlers; all operands one type). One "canonical" convolution is described by its stride
// and padding; the three handlers are its three oneDNN primitives:
//   facegen_conv_fwd:          src [N,H,W,Ci], wt [kh,kw,Ci,Co]      -> dst [N,Ho,Wo,Co]
//   facegen_conv_fwd_inference: the same, as oneDNN's forward_inference (no gradient will follow)
//   facegen_conv_bwd_data:     diff_dst [N,Ho,Wo,Co], wt             -> diff_src [N,H,W,Ci]
//   facegen_conv_bwd_weights:  src [N,H,W,Ci], diff_dst [N,Ho,Wo,Co] -> diff_wt [kh,kw,Ci,Co]
// With the attribute flip=1 the weights (or weight gradient) buffer is instead the kernel of the
// transposed convolution that is this convolution's data gradient: [kh,kw,Co,Ci], spatially
// flipped (wt[i,j,c,o] = flip_wt[kh-1-i, kw-1-j, o, c]). The flip happens in the weight reorder,
// one small reorder per kernel tap, so XLA never materialises a flipped copy.
// Primitive descriptors are built once per shape and cached; activations stay in NHWC (oneDNN's
// AVX-512/AVX2 kernels take it directly); weights are reordered to the layout the primitive picks.

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;
using DT = memory::data_type;

namespace {

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2, kFwdInference = 3 };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// kind, N, Ci, H, W, Co, Ho, Wo, kh, kw, sh, sw, pt, pb, pl, pr, flip, bf16, single_thread
using Key = std::array<int64_t, 19>;

struct Plan {
  dnnl::primitive prim;
  memory::desc user_wt;  // HWIO
  memory::desc prim_wt;  // what the primitive wants (weights or diff weights)
  memory::desc src, dst;
  memory::desc scratchpad;  // user-managed, allocated per call: concurrent calls (one per XLA
                            // device) never share oneDNN's library-owned scratchpad
  bool reorder_wt;
  dnnl::primitive wt_reorder;  // user_wt -> prim_wt (diff weights: prim_wt -> user_wt)
  // flip: per kernel tap (i, j), a reorder between the tap's [Co, Ci] slice of prim_wt and the
  // flipped kernel's slice at (kh-1-i, kw-1-j), whose offset in floats is tap_offset.
  bool flip = false;
  size_t elem_size = sizeof(float);  // 2 for bfloat16
  bool zero_fill = false;  // prim_wt has padded (blocked) channels, which must read as zeros
  std::vector<dnnl::primitive> tap_reorders;
  std::vector<int64_t> tap_offsets;
};

std::mutex cache_mu;
// Convolutions of fewer FLOPs than this run on one OpenMP thread (their primitives are built for
// one thread too). XLA's pool already runs independent ops at once, one per core; a small
// convolution split over every core as well waits at its OpenMP fork/join for threads that the
// other ops hold, and on a machine of few cores that waiting is most of its time (BENCHMARKS.md).
// AMX bfloat16 convolutions are shorter, so waiting weighs more: there the default threshold is
// unlimited. One threshold per
// element type ([0] float32, [1] bfloat16), set by facegen_set_single_thread_below().
std::atomic<int64_t> single_thread_below[2] = {{0}, {0}};
std::atomic<int64_t> single_thread_calls{0};

// Runs f with this thread's OpenMP team limited to one thread when single is set.
template <typename F>
auto WithThreads(bool single, F f) {
  if (!single) return f();
  const int prev = omp_get_max_threads();
  omp_set_num_threads(1);
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{prev};
  return f();
}

std::map<Key, std::shared_ptr<Plan>> cache;

// Called inside Run's WithThreads: a single-thread key's primitives are built for one thread.
std::shared_ptr<Plan> GetPlan(const Key& key) {
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const int64_t n = key[1], ci = key[2], h = key[3], w = key[4], co = key[5], ho = key[6], wo = key[7];
  const int64_t kh = key[8], kw = key[9];
  memory::dims strides = {key[10], key[11]};
  memory::dims pad_l = {key[12], key[14]}, pad_r = {key[13], key[15]};
  const DT dt = key[17] ? DT::bf16 : DT::f32;
  memory::desc src({n, ci, h, w}, dt, Tag::nhwc);
  memory::desc dst({n, co, ho, wo}, dt, Tag::nhwc);
  memory::desc wt_any({co, ci, kh, kw}, dt, Tag::any);
  auto plan = std::make_shared<Plan>();
  plan->elem_size = key[17] ? 2 : sizeof(float);
  plan->user_wt = memory::desc({co, ci, kh, kw}, dt, Tag::hwio);
  plan->src = src;
  plan->dst = dst;
  auto& eng = Engine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto prop = key[0] == kFwdInference ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training;
  dnnl::convolution_forward::primitive_desc fwd(eng, prop,
                                                dnnl::algorithm::convolution_direct, src, wt_any, dst,
                                                strides, pad_l, pad_r, attr);
  switch (key[0]) {
    case kFwd:
    case kFwdInference:
      plan->prim_wt = fwd.weights_desc();
      plan->scratchpad = fwd.scratchpad_desc();
      plan->prim = dnnl::convolution_forward(fwd);
      break;
    case kBwdData: {
      dnnl::convolution_backward_data::primitive_desc pd(eng, dnnl::algorithm::convolution_direct, src, wt_any,
                                                         dst, strides, pad_l, pad_r, fwd, attr);
      plan->prim_wt = pd.weights_desc();
      plan->scratchpad = pd.scratchpad_desc();
      plan->prim = dnnl::convolution_backward_data(pd);
      break;
    }
    default: {
      dnnl::convolution_backward_weights::primitive_desc pd(eng, dnnl::algorithm::convolution_direct, src,
                                                            wt_any, dst, strides, pad_l, pad_r, fwd, attr);
      plan->prim_wt = pd.diff_weights_desc();
      plan->scratchpad = pd.scratchpad_desc();
      plan->prim = dnnl::convolution_backward_weights(pd);
      break;
    }
  }
  plan->reorder_wt = plan->prim_wt != plan->user_wt;
  plan->flip = key[16] != 0;
  if (plan->flip) {
    plan->reorder_wt = true;
    plan->zero_fill = plan->prim_wt.get_size() != static_cast<size_t>(co * ci * kh * kw) * plan->elem_size;
    // The flipped kernel's [Co, Ci] slice of one tap: element (o, c) at o * Ci + c.
    memory::desc slice({co, ci, 1, 1}, dt, memory::dims{ci, 1, 1, 1});
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        memory::desc tap = plan->prim_wt.submemory_desc({co, ci, 1, 1}, {0, 0, i, j});
        plan->tap_reorders.push_back(key[0] == kBwdWeights
                                         ? dnnl::reorder(dnnl::reorder::primitive_desc(eng, tap, eng, slice))
                                         : dnnl::reorder(dnnl::reorder::primitive_desc(eng, slice, eng, tap)));
        plan->tap_offsets.push_back(((kh - 1 - i) * kw + (kw - 1 - j)) * co * ci);
      }
    }
  } else if (plan->reorder_wt) {
    plan->wt_reorder = key[0] == kBwdWeights
                           ? dnnl::reorder(dnnl::reorder::primitive_desc(eng, plan->prim_wt, eng, plan->user_wt))
                           : dnnl::reorder(dnnl::reorder::primitive_desc(eng, plan->user_wt, eng, plan->prim_wt));
  }
  std::lock_guard<std::mutex> lock(cache_mu);
  cache.emplace(key, plan);
  return plan;
}

Key MakeKey(Kind kind, ffi::Span<const int64_t> src, ffi::Span<const int64_t> dst, ffi::Span<const int64_t> wt, int64_t sh, int64_t sw,
            int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t flip, bool bf16) {
  const int64_t flops = 2 * src[0] * dst[1] * dst[2] * dst[3] * src[3] * wt[0] * wt[1];
  return Key{kind, src[0], src[3], src[1], src[2], dst[3], dst[1], dst[2], wt[0], wt[1], sh, sw, pt, pb, pl, pr, flip,
             bf16, flops < single_thread_below[bf16 ? 1 : 0].load(std::memory_order_relaxed)};
}

// flip: copies between the flipped kernel at `user` and prim_wt memory `wt`, tap by tap.
void FlipTaps(const Plan& plan, dnnl::stream& stream, const memory& wt, void* user, bool to_user) {
  const int64_t co = plan.user_wt.get_dims()[0], ci = plan.user_wt.get_dims()[1];
  memory::desc slice({co, ci, 1, 1}, plan.user_wt.get_data_type(), memory::dims{ci, 1, 1, 1});
  auto& eng = Engine();
  for (size_t t = 0; t < plan.tap_reorders.size(); ++t) {
    memory tap_user(slice, eng, static_cast<char*>(user) + plan.tap_offsets[t] * plan.elem_size);
    if (to_user) {
      plan.tap_reorders[t].execute(stream, {{DNNL_ARG_FROM, wt}, {DNNL_ARG_TO, tap_user}});
    } else {
      plan.tap_reorders[t].execute(stream, {{DNNL_ARG_FROM, tap_user}, {DNNL_ARG_TO, wt}});
    }
  }
}

ffi::Error RunPlan(Kind kind, void* a, void* b, void* out, const Key& key);

ffi::Error Run(Kind kind, void* a, void* b, void* out, const Key& key) {
  if (key[18] != 0) single_thread_calls.fetch_add(1);
  return WithThreads(key[18] != 0, [&] { return RunPlan(kind, a, b, out, key); });
}

ffi::Error RunPlan(Kind kind, void* a, void* b, void* out, const Key& key) {
  try {
    auto plan = GetPlan(key);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    std::unordered_map<int, memory> args;
    memory scratchpad(plan->scratchpad, eng);
    if (kind != kBwdWeights) {
      memory wt_user(plan->user_wt, eng, b);
      memory wt = wt_user;
      if (plan->flip) {
        wt = memory(plan->prim_wt, eng);
        if (plan->zero_fill) std::memset(wt.get_data_handle(), 0, plan->prim_wt.get_size());
        FlipTaps(*plan, stream, wt, b, /*to_user=*/false);
      } else if (plan->reorder_wt) {
        wt = memory(plan->prim_wt, eng);
        plan->wt_reorder.execute(stream, {{DNNL_ARG_FROM, wt_user}, {DNNL_ARG_TO, wt}});
      }
      if (kind != kBwdData) {
        args = {{DNNL_ARG_SRC, memory(plan->src, eng, a)}, {DNNL_ARG_WEIGHTS, wt},
                {DNNL_ARG_DST, memory(plan->dst, eng, out)}};
      } else {
        args = {{DNNL_ARG_DIFF_DST, memory(plan->dst, eng, a)}, {DNNL_ARG_WEIGHTS, wt},
                {DNNL_ARG_DIFF_SRC, memory(plan->src, eng, out)}};
      }
      args.emplace(DNNL_ARG_SCRATCHPAD, scratchpad);
      plan->prim.execute(stream, args);
    } else {
      memory dwt_user(plan->user_wt, eng, out);
      memory dwt = plan->reorder_wt ? memory(plan->prim_wt, eng) : dwt_user;
      args = {{DNNL_ARG_SRC, memory(plan->src, eng, a)}, {DNNL_ARG_DIFF_DST, memory(plan->dst, eng, b)},
              {DNNL_ARG_DIFF_WEIGHTS, dwt}, {DNNL_ARG_SCRATCHPAD, scratchpad}};
      plan->prim.execute(stream, args);
      if (plan->flip) {
        FlipTaps(*plan, stream, dwt, out, /*to_user=*/true);
      } else if (plan->reorder_wt) {
        plan->wt_reorder.execute(stream, {{DNNL_ARG_FROM, dwt}, {DNNL_ARG_TO, dwt_user}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

template <Kind kKind, ffi::DataType T>
ffi::Error ConvFwd(ffi::Buffer<T> src, ffi::Buffer<T> wt, ffi::ResultBuffer<T> dst, int64_t sh, int64_t sw,
                   int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t flip) {
  return Run(kKind, src.untyped_data(), wt.untyped_data(), dst->untyped_data(),
             MakeKey(kKind, src.dimensions(), dst->dimensions(), wt.dimensions(), sh, sw, pt, pb, pl, pr, flip,
                     T == ffi::BF16));
}

template <ffi::DataType T>
ffi::Error ConvBwdData(ffi::Buffer<T> diff_dst, ffi::Buffer<T> wt, ffi::ResultBuffer<T> diff_src, int64_t sh,
                       int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t flip) {
  return Run(kBwdData, diff_dst.untyped_data(), wt.untyped_data(), diff_src->untyped_data(),
             MakeKey(kBwdData, diff_src->dimensions(), diff_dst.dimensions(), wt.dimensions(), sh, sw, pt, pb,
                     pl, pr, flip, T == ffi::BF16));
}

template <ffi::DataType T>
ffi::Error ConvBwdWeights(ffi::Buffer<T> src, ffi::Buffer<T> diff_dst, ffi::ResultBuffer<T> diff_wt, int64_t sh,
                          int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t flip) {
  return Run(kBwdWeights, src.untyped_data(), diff_dst.untyped_data(), diff_wt->untyped_data(),
             MakeKey(kBwdWeights, src.dimensions(), diff_dst.dimensions(), diff_wt->dimensions(), sh, sw, pt,
                     pb, pl, pr, flip, T == ffi::BF16));
}

#define FACEGEN_ATTRS                                                                                   \
  .Attr<int64_t>("sh").Attr<int64_t>("sw").Attr<int64_t>("pt").Attr<int64_t>("pb").Attr<int64_t>("pl") \
      .Attr<int64_t>("pr").Attr<int64_t>("flip")

}  // namespace

#define FACEGEN_BIND(T) \
  ffi::Ffi::Bind().Arg<ffi::Buffer<T>>().Arg<ffi::Buffer<T>>().Ret<ffi::Buffer<T>>() FACEGEN_ATTRS

XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvFwd, (ConvFwd<kFwd, ffi::F32>), FACEGEN_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvFwdInference, (ConvFwd<kFwdInference, ffi::F32>), FACEGEN_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvBwdData, ConvBwdData<ffi::F32>, FACEGEN_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvBwdWeights, ConvBwdWeights<ffi::F32>, FACEGEN_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvFwdBf16, (ConvFwd<kFwd, ffi::BF16>), FACEGEN_BIND(ffi::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvFwdInferenceBf16, (ConvFwd<kFwdInference, ffi::BF16>),
                              FACEGEN_BIND(ffi::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvBwdDataBf16, ConvBwdData<ffi::BF16>, FACEGEN_BIND(ffi::BF16));
XLA_FFI_DEFINE_HANDLER_SYMBOL(FacegenConvBwdWeightsBf16, ConvBwdWeights<ffi::BF16>, FACEGEN_BIND(ffi::BF16));

// 1 if oneDNN has native (not reference) bfloat16 kernels for all three convolution primitives on
// this CPU (AVX512-BF16 or AMX; emulated on plain AVX-512), else 0: without them bfloat16
// convolutions stay on XLA.
extern "C" int facegen_onednn_bf16_native() {
  try {
    auto& eng = Engine();
    memory::desc src({2, 32, 16, 16}, DT::bf16, Tag::nhwc), dst({2, 32, 16, 16}, DT::bf16, Tag::nhwc);
    memory::desc wt({32, 32, 3, 3}, DT::bf16, Tag::any);
    const memory::dims strides{1, 1}, pad{1, 1};
    dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training,
                                                  dnnl::algorithm::convolution_direct, src, wt, dst, strides, pad,
                                                  pad);
    dnnl::convolution_backward_data::primitive_desc bd(eng, dnnl::algorithm::convolution_direct, src, wt, dst,
                                                       strides, pad, pad, fwd);
    dnnl::convolution_backward_weights::primitive_desc bw(eng, dnnl::algorithm::convolution_direct, src, wt, dst,
                                                          strides, pad, pad, fwd);
    for (const std::string& impl : {fwd.impl_info_str(), bd.impl_info_str(), bw.impl_info_str()}) {
      if (impl.find("ref") != std::string::npos) return 0;
    }
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}

// Sets the FLOP counts below which a float32 / bfloat16 convolution runs on one thread (0: never).
extern "C" void facegen_set_single_thread_below(int64_t f32_flops, int64_t bf16_flops) {
  single_thread_below[0].store(f32_flops);
  single_thread_below[1].store(bf16_flops);
}

// How many calls have run on one thread so far (tests check that the setting takes effect).
extern "C" int64_t facegen_single_thread_calls() { return single_thread_calls.load(); }

// The oneDNN version this was built against, for error messages and BENCHMARKS.md.
extern "C" const char* facegen_onednn_version() {
  static std::string v;
  if (v.empty()) {
    const dnnl_version_t* ver = dnnl_version();
    v = std::to_string(ver->major) + "." + std::to_string(ver->minor) + "." + std::to_string(ver->patch);
  }
  return v.c_str();
}
