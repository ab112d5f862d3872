"""The skuforge version, recorded in lineage and in the XMP CreatorTool of every output."""

__version__ = "0.1.0"
