# genlab's configs, shipped in the wheel as the package genlab.conf (see pyproject.toml):
# genlab-train reads them as pkg://genlab.conf from any folder.
