"""The demo's two ends of a call, on loopback: a carrier that answers (`carrier`) and a SIP device that dials
(`call`). start-stack.sh runs the carrier and points the demo trunks at it; scripts/demo-call.sh dials."""
