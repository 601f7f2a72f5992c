"""The speed backend: every device that makes metalab faster or leaner without changing what it computes.

Only :mod:`metalab.nn.execution` (the one dispatch point) reaches into this package; learners never import
it. Its parts: the folded multi-task executor (:mod:`~metalab.accel.folded`) with the fused operators it
uses (:mod:`~metalab.accel.conv_norm`, :mod:`~metalab.accel.patch_conv_pool`,
:mod:`~metalab.accel.batch_norm_relu_pool`, :mod:`~metalab.accel.nnpack_conv`, :mod:`~metalab.accel.pooling`
and their C++ sources in ``native/``), task slices (:mod:`~metalab.accel.slicing`), the two-stage
meta-backward (:mod:`~metalab.accel.two_stage_backward`), the checkpointed second-order unroll
(:mod:`~metalab.accel.checkpointed_unroll`), bf16 autocast (:mod:`~metalab.accel.precision`) and the
allocator setting (:mod:`~metalab.accel.allocator`), all switched by :class:`~metalab.accel.options.SpeedOptions`
(``speed.*``), whose contract is "time and memory change, results do not".
"""
