"""Which ONNX backend node tests s4c runs (tests/test_onnx_node_tests.py), onnx-mlir style.

ALLOWED_OPS: every case of these ops (including the `_expanded` function-body variants) must pass
through `s4c.backend`, except the cases named in EXCLUDE. EXCLUDE lists, one by one, the cases s4c
deliberately does not support, each with the reason; the test file runs them too and fails if one
starts passing, so the list cannot go stale silently. S4_EXCLUDE (at the end) names the cases the
ref and C backends pass but the modelled S4 chip refuses, each with the reason; the C backend has no
exclusions of its own. This file is the one list of reasoned exclusions.

s4c imports opsets 7 to the newest the installed onnx knows: the frontend reads 13-28 natively and
converts older models up to 13 with onnx.version_converter, so an opset alone is no reason here,
except for the few cases older than opset 7 (OLD_OPSET).
"""

# The ONNX ops s4c's frontend imports (s4c.frontend.onnx_ops.SUPPORTED_OPS). The test file checks that
# each is supported, and that every supported op the node tests cover is listed here.
ALLOWED_OPS = [
    "Abs", "Add", "And", "Cast", "CastLike", "Ceil", "Clip", "Concat", "Constant",
    "ConstantOfShape", "CumSum", "DequantizeLinear", "Div", "Dropout", "Equal", "Erf", "Exp", "Expand",
    "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "Greater",
    "GreaterOrEqual", "Identity", "IsNaN", "LayerNormalization", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "Max", "Min", "Mul", "Neg", "Not", "Or", "Pow", "Range", "Reciprocal",
    "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "Relu", "Reshape", "Shape",
    "Sigmoid", "Sign", "Size", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh",
    "Tile", "Transpose", "Trilu", "Unsqueeze", "Where", "Xor",
]

# -- exclusion reasons -------------------------------------------------------------------------------
U32_64 = "uint32/uint64 tensors are outside s4c's dtype set"
FLOAT8 = "float8 (e4m3fn/e4m3fnuz/e5m2/e5m2fnuz/e8m0) tensors are outside s4c's dtype set"
SUBBYTE = "sub-byte (int4/uint4/int2/uint2/float4e2m1) tensors are outside s4c's dtype set"
BF16 = "bf16 is typed in the IR but has no numpy arithmetic, so the reference evaluator cannot run it"
STRING = "string tensors are outside s4c's dtype set"
NOT_TENSOR = "sequence/optional values: s4c compiles tensor-only models"
DROPOUT_TRAINING = "training-mode Dropout draws a random mask; s4c compiles inference graphs (Dropout = Identity)"
DROPOUT_MASK = "Dropout's mask output is a training artefact s4c does not produce"
OLD_OPSET = "the case's model is opset 1; s4c imports opsets 7 and newer"
LOOP = "the expanded function body uses Loop (control flow), which s4c does not import"

EXCLUDE: dict[str, str] = {
    # Add
    "test_add_uint32": U32_64,
    "test_add_uint64": U32_64,
    # Cast
    "test_cast_FLOAT_to_BFLOAT16": BF16,
    "test_cast_BFLOAT16_to_FLOAT": BF16,
    "test_cast_FLOAT_to_FLOAT8E4M3FN": FLOAT8,
    "test_cast_FLOAT16_to_FLOAT8E4M3FN": FLOAT8,
    "test_cast_FLOAT_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_cast_FLOAT16_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_cast_FLOAT8E4M3FN_to_FLOAT": FLOAT8,
    "test_cast_FLOAT8E4M3FN_to_FLOAT16": FLOAT8,
    "test_cast_FLOAT8E4M3FNUZ_to_FLOAT": FLOAT8,
    "test_cast_FLOAT8E4M3FNUZ_to_FLOAT16": FLOAT8,
    "test_cast_FLOAT_to_FLOAT8E5M2": FLOAT8,
    "test_cast_FLOAT16_to_FLOAT8E5M2": FLOAT8,
    "test_cast_FLOAT_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_cast_FLOAT16_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_cast_FLOAT8E5M2_to_FLOAT": FLOAT8,
    "test_cast_FLOAT8E5M2_to_FLOAT16": FLOAT8,
    "test_cast_FLOAT8E5M2FNUZ_to_FLOAT": FLOAT8,
    "test_cast_FLOAT8E5M2FNUZ_to_FLOAT16": FLOAT8,
    "test_cast_FLOAT_to_UINT4": SUBBYTE,
    "test_cast_FLOAT16_to_UINT4": SUBBYTE,
    "test_cast_FLOAT_to_INT4": SUBBYTE,
    "test_cast_FLOAT16_to_INT4": SUBBYTE,
    "test_cast_UINT4_to_FLOAT": SUBBYTE,
    "test_cast_UINT4_to_FLOAT16": SUBBYTE,
    "test_cast_UINT4_to_UINT8": SUBBYTE,
    "test_cast_INT4_to_FLOAT": SUBBYTE,
    "test_cast_INT4_to_FLOAT16": SUBBYTE,
    "test_cast_INT4_to_INT8": SUBBYTE,
    "test_cast_FLOAT4E2M1_to_FLOAT": SUBBYTE,
    "test_cast_FLOAT4E2M1_to_FLOAT16": SUBBYTE,
    "test_cast_FLOAT_to_FLOAT4E2M1": SUBBYTE,
    "test_cast_FLOAT16_to_FLOAT4E2M1": SUBBYTE,
    "test_cast_FLOAT_to_UINT2": SUBBYTE,
    "test_cast_FLOAT16_to_UINT2": SUBBYTE,
    "test_cast_FLOAT_to_INT2": SUBBYTE,
    "test_cast_FLOAT16_to_INT2": SUBBYTE,
    "test_cast_UINT2_to_FLOAT": SUBBYTE,
    "test_cast_UINT2_to_FLOAT16": SUBBYTE,
    "test_cast_UINT2_to_UINT8": SUBBYTE,
    "test_cast_INT2_to_FLOAT": SUBBYTE,
    "test_cast_INT2_to_FLOAT16": SUBBYTE,
    "test_cast_INT2_to_INT8": SUBBYTE,
    "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN": FLOAT8,
    "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2": FLOAT8,
    "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN": FLOAT8,
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2": FLOAT8,
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_cast_e8m0_FLOAT_to_FLOAT8E8M0": FLOAT8,
    "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0": FLOAT8,
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT": FLOAT8,
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16": FLOAT8,
    # CastLike
    "test_castlike_FLOAT_to_BFLOAT16": BF16,
    "test_castlike_FLOAT_to_BFLOAT16_expanded": BF16,
    "test_castlike_BFLOAT16_to_FLOAT": BF16,
    "test_castlike_BFLOAT16_to_FLOAT_expanded": BF16,
    "test_castlike_FLOAT_to_FLOAT8E4M3FN": FLOAT8,
    "test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E4M3FN": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded": FLOAT8,
    "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded": FLOAT8,
    "test_castlike_FLOAT8E4M3FN_to_FLOAT": FLOAT8,
    "test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded": FLOAT8,
    "test_castlike_FLOAT8E4M3FN_to_FLOAT16": FLOAT8,
    "test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded": FLOAT8,
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT": FLOAT8,
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded": FLOAT8,
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16": FLOAT8,
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded": FLOAT8,
    "test_castlike_FLOAT_to_FLOAT8E5M2": FLOAT8,
    "test_castlike_FLOAT_to_FLOAT8E5M2_expanded": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E5M2": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E5M2_expanded": FLOAT8,
    "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded": FLOAT8,
    "test_castlike_FLOAT8E5M2_to_FLOAT": FLOAT8,
    "test_castlike_FLOAT8E5M2_to_FLOAT_expanded": FLOAT8,
    "test_castlike_FLOAT8E5M2_to_FLOAT16": FLOAT8,
    "test_castlike_FLOAT8E5M2_to_FLOAT16_expanded": FLOAT8,
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT": FLOAT8,
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded": FLOAT8,
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16": FLOAT8,
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded": FLOAT8,
    "test_castlike_FLOAT_to_UINT4": SUBBYTE,
    "test_castlike_FLOAT_to_UINT4_expanded": SUBBYTE,
    "test_castlike_FLOAT16_to_UINT4": SUBBYTE,
    "test_castlike_FLOAT16_to_UINT4_expanded": SUBBYTE,
    "test_castlike_FLOAT_to_INT4": SUBBYTE,
    "test_castlike_FLOAT_to_INT4_expanded": SUBBYTE,
    "test_castlike_FLOAT16_to_INT4": SUBBYTE,
    "test_castlike_FLOAT16_to_INT4_expanded": SUBBYTE,
    "test_castlike_UINT4_to_FLOAT": SUBBYTE,
    "test_castlike_UINT4_to_FLOAT_expanded": SUBBYTE,
    "test_castlike_UINT4_to_FLOAT16": SUBBYTE,
    "test_castlike_UINT4_to_FLOAT16_expanded": SUBBYTE,
    "test_castlike_UINT4_to_UINT8": SUBBYTE,
    "test_castlike_UINT4_to_UINT8_expanded": SUBBYTE,
    "test_castlike_INT4_to_FLOAT": SUBBYTE,
    "test_castlike_INT4_to_FLOAT_expanded": SUBBYTE,
    "test_castlike_INT4_to_FLOAT16": SUBBYTE,
    "test_castlike_INT4_to_FLOAT16_expanded": SUBBYTE,
    "test_castlike_INT4_to_INT8": SUBBYTE,
    "test_castlike_INT4_to_INT8_expanded": SUBBYTE,
    "test_castlike_FLOAT4E2M1_to_FLOAT": SUBBYTE,
    "test_castlike_FLOAT4E2M1_to_FLOAT_expanded": SUBBYTE,
    "test_castlike_FLOAT4E2M1_to_FLOAT16": SUBBYTE,
    "test_castlike_FLOAT4E2M1_to_FLOAT16_expanded": SUBBYTE,
    "test_castlike_FLOAT_to_FLOAT4E2M1": SUBBYTE,
    "test_castlike_FLOAT_to_FLOAT4E2M1_expanded": SUBBYTE,
    "test_castlike_FLOAT16_to_FLOAT4E2M1": SUBBYTE,
    "test_castlike_FLOAT16_to_FLOAT4E2M1_expanded": SUBBYTE,
    "test_castlike_FLOAT_to_UINT2": SUBBYTE,
    "test_castlike_FLOAT_to_UINT2_expanded": SUBBYTE,
    "test_castlike_FLOAT16_to_UINT2": SUBBYTE,
    "test_castlike_FLOAT16_to_UINT2_expanded": SUBBYTE,
    "test_castlike_FLOAT_to_INT2": SUBBYTE,
    "test_castlike_FLOAT_to_INT2_expanded": SUBBYTE,
    "test_castlike_FLOAT16_to_INT2": SUBBYTE,
    "test_castlike_FLOAT16_to_INT2_expanded": SUBBYTE,
    "test_castlike_UINT2_to_FLOAT": SUBBYTE,
    "test_castlike_UINT2_to_FLOAT_expanded": SUBBYTE,
    "test_castlike_UINT2_to_FLOAT16": SUBBYTE,
    "test_castlike_UINT2_to_FLOAT16_expanded": SUBBYTE,
    "test_castlike_UINT2_to_UINT8": SUBBYTE,
    "test_castlike_UINT2_to_UINT8_expanded": SUBBYTE,
    "test_castlike_INT2_to_FLOAT": SUBBYTE,
    "test_castlike_INT2_to_FLOAT_expanded": SUBBYTE,
    "test_castlike_INT2_to_FLOAT16": SUBBYTE,
    "test_castlike_INT2_to_FLOAT16_expanded": SUBBYTE,
    "test_castlike_INT2_to_INT8": SUBBYTE,
    "test_castlike_INT2_to_INT8_expanded": SUBBYTE,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN": FLOAT8,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded": FLOAT8,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded": FLOAT8,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2": FLOAT8,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded": FLOAT8,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ": FLOAT8,
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded": FLOAT8,
    # DequantizeLinear
    "test_dequantizelinear_e4m3fn": FLOAT8,
    "test_dequantizelinear_e4m3fn_float16": FLOAT8,
    "test_dequantizelinear_e4m3fn_zero_point": FLOAT8,
    "test_dequantizelinear_e5m2": FLOAT8,
    "test_dequantizelinear_uint4": SUBBYTE,
    "test_dequantizelinear_int4": SUBBYTE,
    "test_dequantizelinear_uint2": SUBBYTE,
    "test_dequantizelinear_int2": SUBBYTE,
    "test_dequantizelinear_float4e2m1": SUBBYTE,
    # Div
    "test_div_uint32": U32_64,
    "test_div_uint64": U32_64,
    # Dropout
    "test_dropout_default_mask": DROPOUT_MASK,
    "test_dropout_default_mask_ratio": DROPOUT_MASK,
    "test_training_dropout_default": DROPOUT_TRAINING,
    "test_training_dropout_default_mask": DROPOUT_MASK,
    "test_training_dropout": DROPOUT_TRAINING,
    "test_training_dropout_mask": DROPOUT_MASK,
    "test_training_dropout_zero_ratio_mask": DROPOUT_MASK,
    # Equal
    "test_equal_uint32": U32_64,
    "test_equal_uint64": U32_64,
    "test_equal_string": STRING,
    "test_equal_string_broadcast": STRING,
    # Greater
    "test_greater_uint32": U32_64,
    "test_greater_uint64": U32_64,
    # GreaterOrEqual
    "test_greater_equal_uint32": U32_64,
    "test_greater_equal_uint32_expanded": U32_64,
    "test_greater_equal_uint64": U32_64,
    "test_greater_equal_uint64_expanded": U32_64,
    # Identity
    "test_identity_sequence": NOT_TENSOR,
    "test_identity_opt": NOT_TENSOR,
    # Less
    "test_less_uint32": U32_64,
    "test_less_uint64": U32_64,
    # LessOrEqual
    "test_less_equal_uint32": U32_64,
    "test_less_equal_uint32_expanded": U32_64,
    "test_less_equal_uint64": U32_64,
    "test_less_equal_uint64_expanded": U32_64,
    # Max
    "test_max_uint32": U32_64,
    "test_max_uint64": U32_64,
    # Min
    "test_min_uint32": U32_64,
    "test_min_uint64": U32_64,
    # Mul
    "test_mul_uint32": U32_64,
    "test_mul_uint64": U32_64,
    # Not
    "test_not_2d": OLD_OPSET,
    "test_not_3d": OLD_OPSET,
    "test_not_4d": OLD_OPSET,
    # Pow
    "test_pow_types_float32_uint64": U32_64,
    "test_pow_types_float32_uint32": U32_64,
    # Range
    "test_range_float_type_positive_delta_expanded": LOOP,
    "test_range_float16_type_positive_delta_expanded": LOOP,
    "test_range_bfloat16_type_positive_delta": BF16,
    "test_range_bfloat16_type_positive_delta_expanded": LOOP,
    "test_range_int32_type_negative_delta_expanded": LOOP,
    # Sub
    "test_sub_uint32": U32_64,
    "test_sub_uint64": U32_64,
}

# -- S4 only -------------------------------------------------------------------------------------------
# Cases every other backend passes that the S4 refuses (a TargetError naming the op, checked by
# tests/test_s4_backend.py test_s4_exclusions_are_target_errors): limits of the modelled chip.
NO_LOG = "the S4 VPU has no logarithm (no exp/erf-based exact substitute)"
POW_RUNTIME = ("Pow with a run-time exponent needs log; the S4 VPU has none (constant exponents "
               "0, +-0.5, +-1, 2, 3, 4 are lowered)")
INT32_ALU = ("32/64-bit integer arithmetic/comparison: the S4 VPU has no integer ALU and fp32 holds such "
             "integers exactly only below 2^24 (8/16-bit integers and data movement of any integer are lowered)")

S4_EXCLUDE: dict[str, str] = {
    "test_log": NO_LOG,
    "test_log_example": NO_LOG,
    **{f"test_logsoftmax_{c}{v}": NO_LOG for c in ("axis_0", "axis_1", "axis_2", "default_axis", "example_1",
                                                      "large_number", "negative_axis")
       for v in ("", "_expanded", "_expanded_ver18")},
    "test_pow": POW_RUNTIME,
    "test_pow_bcast_array": POW_RUNTIME,
    "test_pow_bcast_scalar": POW_RUNTIME,
    "test_pow_example": POW_RUNTIME,
    "test_pow_types_float32_int32": POW_RUNTIME,
    "test_pow_types_float32_int64": POW_RUNTIME,
    "test_pow_types_int32_float32": POW_RUNTIME,
    "test_pow_types_int32_int32": POW_RUNTIME,
    "test_pow_types_int64_float32": POW_RUNTIME,
    "test_pow_types_int64_int64": POW_RUNTIME,
    "test_cumsum_1d_int32_exclusive": INT32_ALU,
    "test_cumsum_2d_int32": INT32_ALU,
    "test_div_int32_trunc": INT32_ALU,
    "test_equal": INT32_ALU,
    "test_equal_bcast": INT32_ALU,
    "test_max_int32": INT32_ALU,
    "test_max_int64": INT32_ALU,
    "test_min_int32": INT32_ALU,
    "test_min_int64": INT32_ALU,
}
