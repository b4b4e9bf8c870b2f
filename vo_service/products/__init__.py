"""What a request means: IDs or positions -> index records -> plan -> cache -> product.

Shared by the protocols, the job kinds, the CLI and the Python API; imports only the
engine, the archive, the cache and the catalog readers (DESIGN.md, "Rooms and doors").
"""
