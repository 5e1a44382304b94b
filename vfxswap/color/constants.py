"""The model encoding's constants: ACEScct's curve, its normalisation and the sanitising limit.

A module of its own, below both `kernels` (numpy and torch paths) and `_jit` (the numba
kernels), so neither has to import the other for them.
"""

import math

CCT_LIN_SLOPE = 10.5402377416545
CCT_LIN_OFFSET = 0.0729055341958355
CCT_LIN_CUT = 0.0078125  # linear input below this is on the toe segment
CCT_LOG_CUT = 0.155251141552511  # the same point in ACEScct
CCT_MAX = (math.log2(65504.0) + 9.72) / 17.52
NORM_SCALE = 1.0 / (1.0 - CCT_LIN_OFFSET)
HALF_MAX = 65504.0
