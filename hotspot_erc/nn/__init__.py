"""hotspot_erc.nn"""
