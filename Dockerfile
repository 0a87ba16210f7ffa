FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends dcmtk libpango-1.0-0 libpangoft2-1.0-0 \
    libharfbuzz-subset0 fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services services
COPY worker worker
COPY dicom_gateway dicom_gateway
COPY reports reports
COPY migrations migrations
COPY ml ml
COPY eyescreen eyescreen
COPY webapp webapp
RUN pip install --no-cache-dir .
RUN useradd --system --home /data eyescreen && mkdir -p /data && chown eyescreen /data
USER eyescreen
EXPOSE 11112
CMD ["eyescreen", "gateway"]
