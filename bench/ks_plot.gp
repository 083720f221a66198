# Speedup of the ks_matmul kernel over the permute + bmm baseline, against
# h(b, c) = (b + c) / (b c), one series per batch size, from bench_ks_matmul's CSV.
# Filled symbols: bmm in the token-major layout (the prior method as it runs); open
# symbols (batch 128, 4096): bmm in the kernel's batch_last layout (same-layout comparison).
#
#   gnuplot -e "csv='ks_matmul.csv'; png='ks_matmul.png'" bench/ks_plot.gp
#
# CSV columns: 1 a, 2 b, 3 c, 4 d, 5 batch, 6 layout, 7 h, 8 density, 9 t_kernel_us,
# 10 t_bmm_us, 11 t_dense_us, 12 speedup_bmm, 13 speedup_dense, 14 kernel_gflops,
# 15 max_rel_err, 16 t_bmm_bl_us, 17 speedup_bmm_bl.
if (!exists("csv")) csv = 'ks_matmul.csv'
if (!exists("png")) png = 'ks_matmul.png'
set terminal pngcairo size 1000,640 noenhanced
set output png
set datafile separator ","
set key top left
set logscale x
set logscale y 2
set grid
set xlabel "h(b, c) = (b + c) / (b c)"
set ylabel "speedup over permute + bmm (x)"
set title "ks_matmul kernel vs permute + batched GEMM (Eigen), same run, medians"
# Skipped cases have an empty speedup column and are not drawn.
sel(batch) = (column(5) == batch && strlen(strcol(12)) > 0) ? column(12) : NaN
selbl(batch) = (column(5) == batch && strlen(strcol(17)) > 0) ? column(17) : NaN
plot 1 with lines lc rgb "gray" dt 2 notitle, \
     csv every ::1 using 7:(sel(1)) with points pt 7 ps 1.0 title "batch 1 (token_major)", \
     csv every ::1 using 7:(sel(16)) with points pt 5 ps 1.0 title "batch 16 (token_major)", \
     csv every ::1 using 7:(sel(128)) with points pt 9 ps 1.2 title "batch 128 (batch_last)", \
     csv every ::1 using 7:(sel(4096)) with points pt 13 ps 1.2 title "batch 4096 (batch_last)", \
     csv every ::1 using 7:(selbl(128)) with points pt 8 ps 1.2 title "batch 128, bmm in batch_last layout", \
     csv every ::1 using 7:(selbl(4096)) with points pt 12 ps 1.2 title "batch 4096, bmm in batch_last layout"
