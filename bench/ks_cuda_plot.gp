# Speedup of the ks_matmul CUDA kernel over cuBLAS permute + batched GEMM + permute,
# against h(b, c) = (b + c) / (b c), one series per batch size, from bench/ks_cuda.sh's
# merged CSV (batch_last layout for both; one dtype per plot).
#
#   gnuplot -e "csv='ks_cuda.csv'; png='ks_cuda_fp32.png'; dtype='fp32'" bench/ks_cuda_plot.gp
#
# CSV columns: 1 a, 2 b, 3 c, 4 d, 5 batch, 6 dtype, 7 h, 8 density, 9 t_ks_bl_us,
# 10 t_ks_tm_us, 11 t_bmm_bl_us, 12 t_bmm_tm_us, 13 t_dense_us, 14 speedup_bmm_bl,
# 15 speedup_bmm_tm, 16 speedup_dense, 17 cfg_bl, 18 cfg_tm, 19 t_heuristic_bl_us,
# 20 rel_err, 21 t_torch_bmm_us, 22 t_torch_dense_us, 23 speedup_torch_bmm_bl,
# 24 speedup_torch_bmm_tm.
if (!exists("csv")) csv = 'ks_cuda.csv'
if (!exists("png")) png = 'ks_cuda_fp32.png'
if (!exists("dtype")) dtype = 'fp32'
set terminal pngcairo size 1000,640 noenhanced
set output png
set datafile separator ","
set key top left
set logscale x
set logscale y 2
set grid
set xlabel "h(b, c) = (b + c) / (b c)"
set ylabel "speedup over permute + bmm + permute (x)"
set title sprintf("ks_matmul CUDA kernel vs cuBLAS permute + strided batched GEMM, %s, batch_last, same run, medians", dtype)
sel(batch) = (column(5) == batch && strcol(6) eq dtype) ? column(14) : NaN
plot 1 with lines lc rgb "gray" dt 2 notitle, \
     csv every ::1 using 7:(sel(1)) with points pt 7 ps 1.0 title "batch 1", \
     csv every ::1 using 7:(sel(16)) with points pt 5 ps 1.0 title "batch 16", \
     csv every ::1 using 7:(sel(128)) with points pt 9 ps 1.2 title "batch 128", \
     csv every ::1 using 7:(sel(4096)) with points pt 13 ps 1.2 title "batch 4096", \
     csv every ::1 using 7:(sel(25088)) with points pt 11 ps 1.2 title "batch 25088"
