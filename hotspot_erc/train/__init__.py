"""hotspot_erc.train"""
