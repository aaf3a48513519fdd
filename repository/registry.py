"""Registry entries every installation starts with.

The bitstream formats follow DSpace's default format registry (short description,
MIME type, support level, internal flag, extensions), so that format names in AIPs
written by DSpace resolve without creating new formats.
"""

METADATA_SCHEMAS = [
    ("dc", "http://dublincore.org/documents/dcmi-terms/"),
    ("dcterms", "http://purl.org/dc/terms/"),
    ("local", "http://dspace.org/local"),
    ("dspace", "http://dspace.org/dspace"),
    ("eperson", "http://dspace.org/eperson"),
    ("relation", "http://dspace.org/relation"),
]

UNKNOWN, KNOWN, SUPPORTED = 0, 1, 2

# (short description, MIME type, support level, internal, extensions, description)
BITSTREAM_FORMATS = [
    ("Unknown", "application/octet-stream", UNKNOWN, False, [], "Unknown data format"),
    ("License", "text/plain; charset=utf-8", SUPPORTED, True, [], "Item-specific license agreed upon to submission"),
    ("CC License", "text/html; charset=utf-8", SUPPORTED, True, [], "Item-specific Creative Commons license"),
    ("Adobe PDF", "application/pdf", SUPPORTED, False, ["pdf"], "Adobe Portable Document Format"),
    ("XML", "text/xml", SUPPORTED, False, ["xml"], "Extensible Markup Language"),
    ("Text", "text/plain", SUPPORTED, False, ["txt", "asc"], "Plain Text"),
    ("HTML", "text/html", SUPPORTED, False, ["htm", "html"], "Hypertext Markup Language"),
    ("CSS", "text/css", SUPPORTED, False, ["css"], "Cascading Style Sheets"),
    ("Microsoft Word", "application/msword", SUPPORTED, False, ["doc"], "Microsoft Word"),
    (
        "Microsoft Word XML",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        SUPPORTED,
        False,
        ["docx"],
        "Microsoft Word XML",
    ),
    ("Microsoft Powerpoint", "application/vnd.ms-powerpoint", SUPPORTED, False, ["ppt"], "Microsoft Powerpoint"),
    ("Microsoft Excel", "application/vnd.ms-excel", SUPPORTED, False, ["xls"], "Microsoft Excel"),
    (
        "Microsoft Excel XML",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        SUPPORTED,
        False,
        ["xlsx"],
        "Microsoft Excel XML",
    ),
    ("RTF", "text/richtext", SUPPORTED, False, ["rtf"], "Rich Text Format"),
    ("CSV", "text/csv", SUPPORTED, False, ["csv"], "Comma-Separated Values"),
    ("JPEG", "image/jpeg", SUPPORTED, False, ["jpeg", "jpg"], "Joint Photographic Experts Group/JPEG File Interchange Format (JFIF)"),
    ("GIF", "image/gif", SUPPORTED, False, ["gif"], "Graphics Interchange Format"),
    ("image/png", "image/png", SUPPORTED, False, ["png"], "Portable Network Graphics"),
    ("TIFF", "image/tiff", SUPPORTED, False, ["tiff", "tif"], "Tag Image File Format"),
    ("BMP", "image/x-ms-bmp", KNOWN, False, ["bmp"], "Microsoft Windows bitmap"),
    ("Postscript", "application/postscript", SUPPORTED, False, ["ps", "eps", "ai"], "Postscript Files"),
    ("Video Quicktime", "video/quicktime", KNOWN, False, ["mov", "qt"], "Video Quicktime"),
    ("MPEG", "video/mpeg", KNOWN, False, ["mpeg", "mpg", "mpe"], "Moving Picture Experts Group"),
    ("MP3", "audio/mpeg", KNOWN, False, ["mp3"], "MPEG Audio Layer 3"),
    ("WAV", "audio/x-wav", KNOWN, False, ["wav"], "Broadcase Wave Format"),
    ("ZIP", "application/zip", KNOWN, False, ["zip"], "ZIP archive"),
    ("JSON", "application/json", SUPPORTED, False, ["json"], "JavaScript Object Notation"),
    ("Markdown", "text/markdown", KNOWN, False, ["md"], "Markdown"),
    ("OpenDocument Text", "application/vnd.oasis.opendocument.text", SUPPORTED, False, ["odt"], "OpenDocument Text"),
]
