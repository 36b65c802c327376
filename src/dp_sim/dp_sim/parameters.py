"""Parameter tables of the nodes: declared from one place, checked against the YAML files."""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


@dataclass(frozen=True)
class Parameter:
    """A node parameter: name, default, description and an optional range of values."""

    name: str
    default: bool | int | float | str
    description: str
    value_range: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        # Read once at start-up: read_only makes a later `ros2 param set` fail loudly instead
        # of being ignored.
        descriptor = ParameterDescriptor(description=self.description, read_only=True)
        if self.value_range is not None:
            low, high = self.value_range
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high))
                ]
        return descriptor


def declare(node: Node, parameters: tuple[Parameter, ...]) -> dict[str, object]:
    """Declare every parameter on ``node`` and return the values it starts with."""
    for parameter in parameters:
        node.declare_parameter(parameter.name, parameter.default, parameter.descriptor())
    return {parameter.name: node.get_parameter(parameter.name).value for parameter in parameters}
