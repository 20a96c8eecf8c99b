"""Registry entries for the sublayer-level bottleneck adapters."""

from __future__ import annotations

from codepeft.methods.bottleneck import PLACEMENTS, BottleneckOptions, add_bottleneck_adapters
from codepeft.methods.registry import Method, MethodFamily, dataclass_fields, register_method

_STYLE = {
    "adapter_houlsby": "bottleneck after attention + FFN",
    "adapter_pfeiffer": "bottleneck after FFN",
    "adapter_parallel": "bottleneck beside FFN",
}


def _applier(name: str):
    def apply(model, options, ctx):
        return add_bottleneck_adapters(model, name, BottleneckOptions(**options))

    return apply


for _name in PLACEMENTS:
    register_method(
        Method(
            name=_name,
            family=MethodFamily.ADAPTER,
            style=_STYLE[_name],
            learning_rate=1e-4,
            defaults={
                "size": 256,
                "activation": "tanh",
                "scaling": 1.0,
                "dropout": 0.0,
                "zero_init_up": True,
            },
            apply=_applier(_name),
            option_names=lambda: dataclass_fields(BottleneckOptions),
            mergeable=False,
            quantizable=True,
            notes="non-linear: cannot be merged; saved in codepeft's adapter-only format",
        )
    )
