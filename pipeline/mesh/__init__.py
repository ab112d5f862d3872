"""Meshes: the byte form passed between 3D stages, and the reconstruction backends."""
