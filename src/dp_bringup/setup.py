from glob import glob

from setuptools import setup

PACKAGE_NAME = "dp_bringup"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=[],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (f"share/{PACKAGE_NAME}/launch", sorted(glob("launch/*"))),
        (f"share/{PACKAGE_NAME}/config", sorted(glob("config/*"))),
        (f"share/{PACKAGE_NAME}/rviz", sorted(glob("rviz/*"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Diffusion Policy ROS maintainers",
    maintainer_email="maintainers@example.org",
    description=(
        "Launch files, parameter YAML and RViz configurations of the Diffusion Policy suite."
    ),
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": []},
)
