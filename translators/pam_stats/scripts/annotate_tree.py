"""Annotate each tip with squid = its label, as lmpy's calculate_pam_stats expects."""

import sys

import dendropy


def annotate(source, target):
    tree = dendropy.Tree.get(path=source, schema="nexus")
    for taxon in tree.taxon_namespace:
        taxon.annotations.add_new("squid", taxon.label)
    tree.write(path=target, schema="nexus")


if __name__ == "__main__":
    annotate(sys.argv[1], sys.argv[2])
