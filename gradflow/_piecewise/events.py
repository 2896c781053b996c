"""The log of breakplane crossings and pins, in fixed-size arrays so that it vmaps."""

import enum

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class EventKind(enum.IntEnum):
    """What happened when a pre-activation $z_{ki}$ reached a kink."""

    CROSSING = 0
    """The field pointed through the breakplane on both sides: $z_{ki}$ changed piece."""
    PIN = 1
    """The field pointed into the breakplane from both sides: it slid along the data point
    $x_i$ (Filippov sliding) from `time_in` until `time_out`."""


class EventLog(eqx.Module):
    """Crossings and pins in the order they began. Records past `max_events` are dropped
    (but still counted), so compare `num_events` with the log's length.

    **Fields** (each of length `max_events`; unused records have `neuron = -1`, `kind = -1`
    and NaN times):

    - `neuron`, `point`: $k$ and $i$ of the pre-activation $z_{ki}$.
    - `kink`: which kink $c_j$ of the activation (0 for ReLU).
    - `kind`: an `EventKind`.
    - `time_in`: when $z_{ki}$ reached the kink.
    - `time_out`: when it left (equal to `time_in` for a crossing; NaN for a pin still held at
      the end of the run).
    - `direction`: the side it left to: $+1$ above the kink, $-1$ below, 0 if still pinned.
    - `num_events`, `num_crossings`, `num_pins`: totals over the whole run.
    """

    neuron: Int[Array, " E"]
    point: Int[Array, " E"]
    kink: Int[Array, " E"]
    kind: Int[Array, " E"]
    time_in: Float[Array, " E"]
    time_out: Float[Array, " E"]
    direction: Int[Array, " E"]
    num_events: Int[Array, ""]
    num_crossings: Int[Array, ""]
    num_pins: Int[Array, ""]

    @classmethod
    def empty(cls, max_events: int, dtype) -> "EventLog":
        minus_one = jnp.full((max_events,), -1, jnp.int32)
        nan = jnp.full((max_events,), jnp.nan, dtype)
        zero = jnp.zeros((), jnp.int32)
        return cls(
            minus_one, minus_one, minus_one, minus_one, nan, nan, jnp.zeros_like(minus_one),
            zero, zero, zero,
        )  # fmt: skip

    def record(self, kind, neuron, point, kink, time, direction) -> "EventLog":
        """Appends an event; returns the new log. Its index is the old `num_events`."""
        index = self.num_events
        is_pin = kind == EventKind.PIN

        def put(array, value):
            return array.at[index].set(jnp.asarray(value, array.dtype), mode="drop")

        return EventLog(
            neuron=put(self.neuron, neuron),
            point=put(self.point, point),
            kink=put(self.kink, kink),
            kind=put(self.kind, kind),
            time_in=put(self.time_in, time),
            time_out=put(self.time_out, jnp.where(is_pin, jnp.nan, time)),
            direction=put(self.direction, direction),
            num_events=index + 1,
            num_crossings=self.num_crossings + (~is_pin).astype(jnp.int32),
            num_pins=self.num_pins + is_pin.astype(jnp.int32),
        )

    def release(self, index, time, direction) -> "EventLog":
        """Closes the pin recorded at `index`."""
        return eqx.tree_at(
            lambda log: (log.time_out, log.direction),
            self,
            (
                self.time_out.at[index].set(time, mode="drop"),
                self.direction.at[index].set(jnp.asarray(direction, jnp.int32), mode="drop"),
            ),
        )
