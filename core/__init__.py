"""The domain and the pure logic: what an SO-101 is, and the rules that are not a device.

No ZeroMQ, no hardware, no threads of their own: `so101` (joint names, arm names, lerobot's
feature keys), `safety` (goal limits), `action_plan` (chunks placed on the control clock),
`frame_clock` (episode frames from streams), `backoff`, `estop_latch`. Unit-tested directly.
"""
