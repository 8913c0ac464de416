"""The control loop process (`python -m workers.control`) and its scheduling logic."""
