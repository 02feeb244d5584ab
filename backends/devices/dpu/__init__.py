"""Xilinx/AMD DPU boards reached over HTTP through the devlab agent."""
