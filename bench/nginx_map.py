#!/usr/bin/env python3
"""Writes the nginx `map` blocks that send each country (then continent) to its nearest
example region, from data/country-centroids.csv and the [[regions]] of a geobridge config.
This is the operator's alternative to geobridge that bench/compare.sh measures against."""

import csv
import math
import sys
import tomllib


def distance_km(a, b):
    (lat1, lon1), (lat2, lon2) = [(math.radians(x), math.radians(y)) for x, y in (a, b)]
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(
        (lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


def main(config_path, centroids_path):
    with open(config_path, "rb") as f:
        regions = [(r["id"], (r["latitude"], r["longitude"])) for r in tomllib.load(f)["regions"]]
    nearest = lambda point: min(regions, key=lambda r: distance_km(point, r[1]))[0]
    by_country, continent_points = {}, {}
    with open(centroids_path) as f:
        for row in csv.DictReader(f):
            point = (float(row["latitude"]), float(row["longitude"]))
            by_country[row["country"]] = nearest(point)
            continent_points.setdefault(row["continent"], []).append(point)
    default = regions[0][0]
    print("map $geo_continent $region_by_continent {")
    print(f"    default {default};")
    for continent, points in sorted(continent_points.items()):
        if continent:
            lat = sum(p[0] for p in points) / len(points)
            lon = sum(p[1] for p in points) / len(points)
            print(f"    {continent} {nearest((lat, lon))};")
    print("}")
    print("map $geo_country $region {")
    print("    default $region_by_continent;")
    for country, region in sorted(by_country.items()):
        print(f"    {country} {region};")
    print("}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
