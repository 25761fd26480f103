"""hotspot_erc.reference"""
