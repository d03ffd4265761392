# Sourced by the GPU scripts: the CUDA 13 libraries the onnxruntime-gpu 1.31 wheel links to
# (cudart, cublas, cufft, curand, nvrtc, cuDNN 9), looked up in CUDA_LIB_DIRS, then in Python's
# nvidia-* wheels and /usr/local/cuda, put on LD_LIBRARY_PATH. Needs ORT_GPU_DIR (the wheel's
# capi/lib* files); sets ORT_DYLIB_PATH to its libonnxruntime.
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}
export ORT_DYLIB_PATH="$ORT_GPU_DIR/libonnxruntime.so.$ORT_GPU_VERSION"
gpu_dirs="${CUDA_LIB_DIRS:-}"
gpu_libs=(libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcufft.so.12 libcurand.so.10 libnvrtc.so.13 libcudnn.so.9)
gpu_names=()
for lib in "${gpu_libs[@]}"; do gpu_names+=(-o -name "$lib"); done
gpu_found=$(find /usr/local/nvidia/ /usr/local/cuda/ /usr/local/lib/ /opt/ /usr/lib/ /root/.local/ \( "${gpu_names[@]:1}" \) 2>/dev/null || true)
for lib in "${gpu_libs[@]}"; do
  hit=$(grep -m1 "/$lib\$" <<<"$gpu_found" || true)
  if [ -n "$hit" ]; then gpu_dirs="$gpu_dirs:$(dirname "$hit")"; else echo "gpu-env: $lib not found" >&2; fi
done
export LD_LIBRARY_PATH="${gpu_dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >&2
if ldd "$ORT_GPU_DIR/libonnxruntime_providers_cuda.so" | grep 'not found'; then
  echo "gpu-env: the CUDA provider's libraries are missing (above)" >&2
fi
