"""XMP packets with the IPTC ``DigitalSourceType`` that tells platforms how an image was made.

Vocabulary: https://cv.iptc.org/newscodes/digitalsourcetype/. We only ever claim what is
true: ``compositeWithTrainedAlgorithmicMedia`` when a model cut the product out,
``trainedAlgorithmicMedia`` for generated views; a classical (non-learned) cutout on a
flat background carries no DigitalSourceType, only the creator tool.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

IPTC_DST_BASE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
COMPOSITE_WITH_TRAINED = "compositeWithTrainedAlgorithmicMedia"
TRAINED_ALGORITHMIC = "trainedAlgorithmicMedia"


def xmp_packet(*, creator_tool: str, digital_source_type: str | None = None) -> str:
    source = (
        f"   <Iptc4xmpExt:DigitalSourceType>{escape(IPTC_DST_BASE + digital_source_type)}"
        "</Iptc4xmpExt:DigitalSourceType>\n"
        if digital_source_type
        else ""
    )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">\n'
        f"   <xmp:CreatorTool>{escape(creator_tool)}</xmp:CreatorTool>\n"
        f"{source}"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )
